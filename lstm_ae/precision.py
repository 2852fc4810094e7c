"""Precision: which autocast a device can run, decided from the device itself, and the autocast context.

    unavailable("bf16", torch.device("cpu"))  # None where this CPU runs bf16 natively, else why not (one line)
    check_precision("bf16", torch.device("cpu"))  # the same as a PrecisionUnavailable (a ValueError)
    with autocast("bf16", device): ...

bf16 on a CPU runs through oneDNN, which has bf16 kernels only where the CPU has AVX-512 (AVX512-BF16 or AMX make
them native); elsewhere (AVX2 CPUs: most laptops, older servers) a bf16 `nn.LSTM` fails inside oneDNN ("could not
create a primitive descriptor for the LSTM forward propagation primitive"). So a CPU's answer comes from running a
tiny bf16 LSTM once per process: the very thing that fails, asked of the CPU at hand (it honours ONEDNN_MAX_CPU_ISA,
which is how the tests make a CPU without it: ONEDNN_MAX_CPU_ISA=AVX2). fp16 needs a CUDA GPU; bf16 on a GPU, one
that CUDA says supports it.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")  # (torch is imported where it is used: the command line's help reads these)
_AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # torch's dtypes


class PrecisionUnavailable(ValueError):
    """The device cannot run the precision asked for: the message says which device, what it lacks, and the fix."""


def autocast(precision: str, device: torch.device):
    """The context that runs a forward pass and its loss at `precision` on `device`."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, _AUTOCAST[precision]))


def unavailable(precision: str, device: torch.device | str) -> str | None:
    """Why `device` cannot run `precision` (one line, with the fix), or None where it can."""
    import torch

    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"precision bf16 is not supported by the GPU {torch.cuda.get_device_name(device)}: use fp16 or fp32"
        return None
    if precision == "fp16":
        return f"precision fp16 needs a CUDA GPU (this run is on {device.type}): use bf16 or fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_runs_bf16():
        return (
            f"precision bf16 needs a CPU with native bf16 (AVX-512 with AVX512-BF16 or AMX), and this one "
            f"({cpu_name()}) has none: use fp32 (--precision fp32 or --set precision=fp32)"
        )
    return None


def check_precision(precision: str, device: torch.device | str) -> None:
    """PrecisionUnavailable where `device` cannot run `precision`."""
    if reason := unavailable(precision, device):
        raise PrecisionUnavailable(reason)


def runnable(device: torch.device | str, wanted=PRECISIONS) -> list[str]:
    """Of `wanted`, the precisions `device` can run, in order."""
    return [p for p in wanted if unavailable(p, device) is None]


@functools.cache
def cpu_runs_bf16() -> bool:
    """Whether this CPU runs a bf16 nn.LSTM (oneDNN's bf16 kernels): tried once, on a tiny one (a few ms)."""
    import torch

    with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they were
        lstm = torch.nn.LSTM(1, 2, batch_first=True)
        x = torch.rand(1, 2, 1)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(x)
    except RuntimeError:  # oneDNN: "could not create a primitive descriptor for the LSTM ..."
        return False
    return True


@functools.cache
def cpu_name() -> str:
    """The CPU's model name, as the kernel reports it (else the platform's word for it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"
