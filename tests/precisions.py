"""What the tests of bf16 share: whether this CPU runs it, and an environment that makes any CPU one that does not.

Both kinds of CPU run every bf16 path: where bf16 is native a test trains in it, elsewhere it checks the refusal
(`bf16_or_refused`); and the refusal runs everywhere in processes given WITHOUT_BF16, in which oneDNN (PyTorch's CPU
kernels) goes no further than AVX2, as on a CPU without AVX-512: a bf16 nn.LSTM fails there just as it does on one.
"""

from __future__ import annotations

import pytest

from lstm_ae.precision import PrecisionUnavailable, cpu_runs_bf16

NATIVE_BF16 = cpu_runs_bf16()
WITHOUT_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # added to a child process's environment
LOW = "bf16" if NATIVE_BF16 else "fp32"  # the precision a test that records one can train in on this CPU


def bf16_or_refused(action):
    """`action()` where this CPU runs bf16 (its result), else the check that it is refused in lstm_ae's one line."""
    if NATIVE_BF16:
        return action()
    with pytest.raises(PrecisionUnavailable, match="needs a CPU with native bf16"):
        action()
    return None
