"""Whether the process keeps the large buffers it frees, for the next training step, or hands them back to the system.

    keep_freed_memory()        # what `fit` does: a step's large tensors come back from memory already mapped
    keep_freed_memory(False)   # glibc's defaults again

glibc's malloc serves each buffer of more than 32 MB (a pixel batch's (784, 64, 256) gates: 51 MB) with a fresh
mapping and unmaps it when freed, so every training step takes its large buffers back from the system one zeroed
page at a time: a third of a pixel training step on the CPU (measured: `sweeps bench --measure pixel`). Kept, the
process's memory stays at its peak instead of falling between steps. Elsewhere than glibc (macOS, musl) nothing
changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
KEPT = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}  # no mappings: freed memory stays in the heap, untrimmed
DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}


@functools.cache
def _mallopt():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    return None


def keep_freed_memory(keep: bool = True) -> bool:
    """Set the process's malloc to keep freed memory (`keep`) or to glibc's defaults; False where it cannot."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in (KEPT if keep else DEFAULTS).items())
