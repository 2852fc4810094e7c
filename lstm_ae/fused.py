"""One LSTM layer over a whole sequence in one call, forward and backward, on the CPU (`fused_lstm.cpp`).

    h, (h_n, c_n) = run(projected, (h0, c0), weight_hh)                           # nn.LSTM's cell
    h, (h_n, c_n) = run(projected, (h0, c0), weight, (recurrent_norm, cell_norm))  # LayerNormLSTMLayer's

`projected` is the layer's input projection, (N, T, 4H), biases included: the caller computes it, once for the
whole sequence, or once per sequence where the input is the same at every step (a decoder fed z). The mathematics
and the parameters are those of `lstm_ae.cells`; only the way of computing differs (checkpoints do not change).

The extension is compiled from its source on first use, in the Python environment (`make install` does it once),
and where it cannot be built (no C++ compiler) the layers run step by step in PyTorch, after one warning line.
On a GPU the layers run step by step too: cuDNN serves nn.LSTM there, and the layer-normalised cell's steps are
kernels launched from Python. Under bf16 autocast the fused layer computes in fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_lstm.cpp")
# -ffast-math lets GCC call glibc's vector exp and tanh (libmvec); it applies to compiling this file alone, not to
# linking (where it would switch the whole process's floats to flush denormals to zero).
COMPILE_FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd"]
_enabled = True


@functools.cache
def extension():
    """The compiled extension, or None where it cannot be built here (said once, on stderr)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # not "No CUDA runtime is found"
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(
            name="lstm_ae_fused_lstm",
            sources=[str(SOURCE)],
            extra_cflags=COMPILE_FLAGS,
            extra_ldflags=["-lmvec"],
            build_directory=_build_directory(),
        )
    except Exception as error:  # no compiler, no ninja, an unwritable cache: the Python cells still work
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        print(
            f"lstm_ae: the fused LSTM layer cannot be built here ({reason}); the layers run step by step, slower",
            file=sys.stderr,
            flush=True,
        )
        return None


def _build_directory() -> str | None:
    """In the Python environment (one build per environment, gone with it), else PyTorch's own cache folder."""
    folder = Path(sys.prefix) / "torch_extensions" / "lstm_ae_fused_lstm"
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return str(folder)
    return None


def usable(tensor: torch.Tensor) -> bool:
    """Whether the fused layer runs on `tensor` here: on the CPU, in fp32 or fp64 (or under autocast, where it
    computes in fp32), and with the extension built."""
    precision = tensor.dtype in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu")
    return _enabled and tensor.device.type == "cpu" and precision and extension() is not None


@contextlib.contextmanager
def step_by_step():
    """The layers run step by step in PyTorch within this block (to compare them with the fused one)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def run(
    projected: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    state: tuple[torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    norms: tuple[torch.nn.LayerNorm, torch.nn.LayerNorm] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(outputs (N, T, H), (h_n, c_n)) of one layer. `projected`: the input projection (N, T, 4H), or two parts
    that add up to it (expanded views: a sequence's part and a step's, say); `weight`: the recurrent (4H, H);
    `norms`: the layer norms of the recurrent projection and of the cell, for the layer-normalised cell."""
    first, second = projected if isinstance(projected, tuple) else (projected, projected.new_empty(0))
    if norms is None:
        parameters, eps = (first.new_empty(0),) * 4, 0.0
    else:
        recurrent_norm, cell_norm = norms
        parameters = (recurrent_norm.weight, recurrent_norm.bias, cell_norm.weight, cell_norm.bias)
        eps = recurrent_norm.eps
    outputs, c_n = _Layer.apply(first, second, *state, weight, eps, *parameters)
    return outputs, (outputs[:, -1], c_n)


class _Pool:
    """Buffers of the sizes the layers keep for backward, handed back once their graph is gone (`fit` lets it go
    after each backward: one set serves every step; a loop that holds its loss until the next forward needs two).
    Fresh memory of that size comes from the system page by page: a new (784, 64, 256) buffer each step cost more
    than the step's arithmetic."""

    def __init__(self):
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        with self._lock:
            free = self._free.get((shape, like.dtype))
            if free:
                return free.pop()
        return like.new_empty(shape)

    def give(self, *buffers: torch.Tensor) -> None:
        with self._lock:
            for buffer in buffers:
                self._free.setdefault((tuple(buffer.shape), buffer.dtype), []).append(buffer)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


_pool = _Pool()


def release_buffers() -> None:
    """Let go of the buffers the layers keep for their next step (`fit` does at its start: a worker process that
    runs one trial after another would otherwise keep every earlier trial's sizes)."""
    _pool.clear()


class _Layer(torch.autograd.Function):
    """The extension's layer for autograd: batch-first outside, as nn.LSTM; time-major inside (see the source)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, projected, second, h0, c0, weight, eps, *norms):
        n, t, h4 = projected.shape
        size, norm, keep = h4 // 4, norms[0].numel() > 0, any(ctx.needs_input_grad)
        kept = [_pool.take(shape, projected) for shape in _shapes(n, t if keep else 1, size, norm)]
        h = projected.new_empty((t, n, size))
        h0, c0 = h0.contiguous(), c0.contiguous()
        xp, xp2 = _time_major(projected), _time_major(second)
        extension().forward(xp, xp2, h0, c0, weight, list(norms), eps, keep, h, kept)
        c_n = kept[0][(t - 1) if keep else (t - 1) % 2].clone()
        if keep:  # kept as long as the graph is (a second backward may read them), then handed back
            ctx.save_for_backward(h0, c0, weight, h, *norms)
            ctx.kept, ctx.second = kept, second.numel() > 0
            weakref.finalize(ctx, _pool.give, *kept)
        else:
            _pool.give(*kept)
        return h.transpose(0, 1), c_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, d_outputs, d_c_n):
        h0, c0, weight, h, *norms = ctx.saved_tensors
        dh = torch.zeros_like(h) if d_outputs is None else d_outputs.transpose(0, 1).contiguous()
        dc_n = torch.zeros_like(c0) if d_c_n is None else d_c_n
        dxp = h.new_empty(h.shape[:2] + (4 * h.shape[2],))
        dr = _pool.take(tuple(dxp.shape), dxp) if norms[0].numel() else dxp
        dh0, dc0, dweight, *norm_grads = extension().backward(dh, dc_n, h0, c0, weight, norms, h, ctx.kept, dxp, dr)
        if dr is not dxp:
            _pool.give(dr)
        d_projected = dxp.transpose(0, 1)
        return d_projected, d_projected if ctx.second else None, dh0, dc0, dweight, None, *(norm_grads or [None] * 4)


def _time_major(projected: torch.Tensor) -> torch.Tensor:
    """A (N, T, 4H) projection as the (T, N, 4H) view the extension reads, its last dimension contiguous."""
    if projected.numel() == 0:
        return projected
    view = projected.transpose(0, 1)
    return view if view.stride(-1) == 1 else view.contiguous()


def time_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear of a batch-first x (N, T, F), computed time-major and returned as a batch-first view: the layout
    the fused layer reads fastest, and the one its outputs have (no copy either way)."""
    return torch.nn.functional.linear(x.transpose(0, 1), weight, bias).transpose(0, 1)


def _shapes(n: int, steps: int, size: int, norm: bool) -> list[tuple]:
    """The shapes of forward's buffers c, act, th, rn, rstd_r, cn, rstd_c (time-major) for `steps` steps kept (the
    plain cell keeps no layer norm's: empty)."""
    gates, none = 4 * size, (0,)
    return [
        (max(steps, 2), n, size),  # c: inference keeps this step's and the last one's
        (steps, n, gates),
        (steps, n, size),
        (steps, n, gates) if norm else none,
        (steps, n) if norm else none,
        (steps, n, size) if norm else none,
        (steps, n) if norm else none,
    ]
