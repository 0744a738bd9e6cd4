"""Per-target schedules of the decomposed computes (installed as ``tvm_deconv.schedules``).

Importing this package registers the built-in implementations with
:mod:`tvm_deconv.strategy`.
"""

from tvm_deconv.compute import decomposed_conv_transpose
from tvm_deconv.strategy import CONV_TRANSPOSE, Implementation, register

from .common import supports_dtype
from .cuda import cuda_compute, schedule_cuda
from .generic_cpu import schedule_generic_cpu

register(CONV_TRANSPOSE, Implementation(
    name="arm_cpu.decomposed", target_keys=("arm_cpu",), priority=20,
    compute=decomposed_conv_transpose, schedule=schedule_generic_cpu, predicate=supports_dtype))
register(CONV_TRANSPOSE, Implementation(
    name="cpu.generic", target_keys=("cpu",), priority=0,
    compute=decomposed_conv_transpose, schedule=schedule_generic_cpu, predicate=supports_dtype))
# Tiled implicit GEMM per phase (schedules/cuda.py); dlight schedules only what is left.
register(CONV_TRANSPOSE, Implementation(
    name="cuda.decomposed", target_keys=("cuda", "gpu"), priority=20,
    compute=cuda_compute, schedule=schedule_cuda, predicate=supports_dtype))
from .x86 import schedule_x86, supports_x86, x86_compute, x86_pack  # noqa: E402
register(CONV_TRANSPOSE, Implementation(
    name="x86.decomposed", target_keys=("cpu",), priority=10, compute=x86_compute,
    schedule=schedule_x86, pack=x86_pack, predicate=supports_x86))
