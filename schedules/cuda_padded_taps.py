"""CUDA: ragged layers as phase-batched ones, by zero taps (``cuda.padded_taps``).

Where k % s != 0 (CycleGAN k3 s2, FSRCNN k9 s2) the phases have different tap counts, so
:mod:`.cuda` runs one kernel per phase (float16: a tensor-core GEMM per phase, where its sizes
are multiples of 16; otherwise TVM's default lowering).  Rounding the kernel up to a multiple
of the stride with zero taps (:func:`~tvm_deconv.plan.stride_multiple_kernel`: the same conv)
makes every phase alike, so the one phase-batched kernel takes it, the tensor cores included
for float16.

IR in: the spec of a ragged layer.  IR out: :func:`~.cuda.cuda_compute`'s PrimFunc of the
padded spec (data, packed padded weight, out: the output is the original's), scheduled by
:func:`~.cuda.schedule_cuda` like any phase-batched conv, and a pack PrimFunc that reads the
ORIGINAL weight and packs zeros for the added taps (folded at compile time for a constant
weight).  The price: ``prod(k'/k)`` times the multiply-adds (16/9 for k3 s2 in 2-d), hence
:data:`MAX_ZERO_TAP_RATIO`.
"""

from __future__ import annotations

import math

import tvm_ffi
from tvm.target import Target

from tvm_deconv.compute import decomposed_pack, decomposed_packed_shape
from tvm_deconv.plan import ConvTransposeSpec, make_plan, stride_multiple_kernel

from .common import supports_dtype
from .cuda import cuda_compute, uses_phase_batched_kernel
from .cuda import workspace_bytes as batched_workspace_bytes

# Multiply-adds of the padded conv over the original's, at most.
MAX_ZERO_TAP_RATIO = 2.0
# The dtypes it takes, each up to a batch (None: any); on Hopper cuda.wgmma takes float16
# ragged layers first, exactly (1.76-1.77x these zero taps on CycleGAN at batch 64,
# h100-wgmma-ragged-ab-s26.json).  float16 at any batch: on the H100
# (benchmarks/results/h100-tc-exact-ab-s23.json) the zero taps ran CycleGAN 256->128 /
# 128->64 at batch 64 1.14x / 1.15x faster than the exact tensor-core GEMM per phase (16/9
# the MACs in one kernel beat four kernels with exactly theirs), at batch 1 0.96x / 1.22x.
# float32 at batch 1: on the H100 CycleGAN 256->128 / 128->64 ran
# 0.122 / 0.125 ms this way, 0.168 / 0.135 ms in the exact per-phase kernels (their few
# thread blocks per phase leave SMs idle), but at batch 64 0.63x those (the zero taps' MACs
# cost more than the chip they fill); benchmarks/results/h100-padded-taps-ab-s20.json.
PADDED_TAPS_MAX_BATCH = {"float16": None, "float32": 1}


def zero_tap_ratio(spec: ConvTransposeSpec) -> float:
    """Multiply-adds of :func:`~tvm_deconv.plan.stride_multiple_kernel`'s conv over ``spec``'s."""
    return make_plan(stride_multiple_kernel(spec)).macs() / make_plan(spec).macs()


def supports_cuda_padded_taps(spec: ConvTransposeSpec, target: Target) -> str | None:
    """``None`` where ``cuda.padded_taps`` takes ``spec``, else why not."""
    why = supports_dtype(spec, target)
    if why is not None:
        return why
    if spec.out_dtype not in PADDED_TAPS_MAX_BATCH:
        return (f"{spec.out_dtype}: the per-phase kernels run ragged layers without zero taps "
                f"(padded taps serve {', '.join(PADDED_TAPS_MAX_BATCH)})")
    max_batch = PADDED_TAPS_MAX_BATCH[spec.out_dtype]
    if max_batch is not None and spec.batch > max_batch:
        return (f"{spec.out_dtype} at batch {spec.batch} > {max_batch}: the exact per-phase "
                "kernels fill the chip, and zero taps would only add multiply-adds")
    if make_plan(spec).phase_batched:
        return "the phases are alike already: no taps to add"
    padded = stride_multiple_kernel(spec)
    if not make_plan(padded).phase_batched:
        return ("zero taps do not make it phase-batched (dilation above 1, or a stride that "
                "does not divide the output)")
    ratio = zero_tap_ratio(spec)
    if ratio > MAX_ZERO_TAP_RATIO:
        return (f"zero taps would make {ratio:.2f}x the multiply-adds "
                f"(limit {MAX_ZERO_TAP_RATIO}x)")
    if not uses_phase_batched_kernel(padded):
        return "the padded conv's staged input window does not fit shared memory"
    return None


def padded_taps_compute(spec: ConvTransposeSpec):
    """The phase-batched compute of the padded conv, reading :func:`padded_taps_pack`'s
    weight."""
    return cuda_compute(stride_multiple_kernel(spec))


def padded_taps_pack(spec: ConvTransposeSpec):
    """Pack ``spec``'s weight into the padded conv's layout, zeros for the added taps."""
    return decomposed_pack(stride_multiple_kernel(spec), weight_of=spec)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """The packed weight's growth (its zero taps) and the padded conv's split-K partials."""
    padded = stride_multiple_kernel(spec)
    growth = math.prod(decomposed_packed_shape(padded)) - math.prod(spec.weight_shape)
    return growth * tvm_ffi.dtype(spec.dtype).itemsize + batched_workspace_bytes(padded)
