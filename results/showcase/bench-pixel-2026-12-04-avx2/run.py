"""The pixel measure with the fused layer's AVX2 code and PyTorch held to AVX2: the older CPU's instructions on an
AVX-512 one (its caches, memory and MKL's GEMM stay this CPU's). From the repository's root:

    mkdir -p /tmp/avx2 && sed 's/target_clones("avx512f", "avx2", "default")/target("avx2,fma")/' \\
        lstm_ae/fused_lstm.cpp > /tmp/avx2/fused_lstm_avx2.cpp
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python results/showcase/bench-pixel-2026-12-04-avx2/run.py
"""

import logging
import sys

from torch.utils import cpp_extension

from lstm_ae import fused
from sweeps import bench

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
avx2 = cpp_extension.load(
    name="lstm_ae_fused_lstm_avx2",
    sources=["/tmp/avx2/fused_lstm_avx2.cpp"],
    extra_cflags=fused.COMPILE_FLAGS,
    extra_ldflags=["-lmvec"],
    build_directory="/tmp/avx2",
)
fused.extension = lambda: avx2
sys.exit(bench.main(quick=False, out="/tmp/avx2/out", only=["pixel"]))
