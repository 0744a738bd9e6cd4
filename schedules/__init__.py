"""Per-target schedules of the decomposed computes (installed as ``tvm_deconv.schedules``).

Importing this package registers the built-in implementations with
:mod:`tvm_deconv.strategy`.
"""

from tvm_deconv.compute import decomposed_conv_transpose
from tvm_deconv.strategy import CONV_TRANSPOSE, Implementation, register

from .common import supports_dtype
from .generic_cpu import schedule_generic_cpu

register(CONV_TRANSPOSE, Implementation(
    name="arm_cpu.decomposed", target_keys=("arm_cpu",), priority=20,
    compute=decomposed_conv_transpose, schedule=schedule_generic_cpu, predicate=supports_dtype))
register(CONV_TRANSPOSE, Implementation(
    name="cpu.generic", target_keys=("cpu",), priority=0,
    compute=decomposed_conv_transpose, schedule=schedule_generic_cpu, predicate=supports_dtype))
# No schedule: dlight's GPU rules schedule the decomposed blocks like any other PrimFunc.
register(CONV_TRANSPOSE, Implementation(
    name="cuda.decomposed", target_keys=("cuda", "gpu"), priority=20,
    compute=decomposed_conv_transpose, schedule=None, predicate=supports_dtype))
