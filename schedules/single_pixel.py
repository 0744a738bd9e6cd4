"""Transposed convs of a 1-pixel input (the latent projection that opens every DCGAN).

With a single input pixel every output element receives exactly one kernel tap, so the
per-phase stride-1 correlation would mostly read padding (k^d taps per output, one useful).
Here the op is what it really is, a GEMV: ``out[n, oc, o] = sum_c x[n, c] * w[c, oc, o + pad]``
— with IOHW weights, ``(oc, o)`` is contiguous, so the kernel streams the weight once,
vectorised along it.  Taken when the input is 1 pixel, dilation is 1, groups is 1 and every
output element has a tap (output_padding ≤ pad_after); anything else keeps the phase
kernels.

On GPUs (:func:`supports_gpu_single_pixel`) the same compute is left to dlight, whose Matmul
rule (batch > 1) or Reduction rule (batch 1) schedules it as the GEMM / GEMV it is: the
implicit-GEMM kernel multiplied the padding taps too (16x the MACs for DCGAN's k4 projection)
and ran 0.8x TVM's default at batch 64.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import (INDEX_DTYPE, OUT_ELEMWISE_FUSABLE, PHASE_ANNOTATION, _i64,
                                _index, accumulate_dtype)
from tvm_deconv.plan import ConvTransposeSpec

from .common import root_blocks, supports_dtype
from .x86 import vector_lanes

# Output vectors accumulated per thread-loop step (register block).
VECTORS_PER_STEP = 4


def supports_single_pixel(spec: ConvTransposeSpec, target: Target) -> str | None:
    if any(n != 1 for n in spec.in_size):
        return f"input is {spec.in_size}, not a single pixel"
    if any(d != 1 for d in spec.dilation) or spec.groups != 1:
        return "dilation or groups"
    if any(op > pa for op, pa in zip(spec.output_padding, spec.pad_after)):
        return "output_padding leaves outputs without a tap"
    if spec.kernel_layout[:2] != "IO" or spec.out_layout[:2] != "NC":
        return "needs IO.. weights and NC.. output (contiguous GEMV rows)"
    return supports_dtype(spec, target)


def supports_gpu_single_pixel(spec: ConvTransposeSpec, target: Target) -> str | None:
    """:func:`supports_single_pixel`; float16 accumulates in float32 (on the H100 the
    tensor-core implicit GEMM ran DCGAN's float16 projection 4.4x / 9.6x slower than this at
    batch 1 / 64: benchmarks/results/h100-fp16-single-pixel-ab-s20.json)."""
    return supports_single_pixel(spec, target)


def single_pixel_compute(spec: ConvTransposeSpec, acc_dtype: str | None = None
                         ) -> tirx.PrimFunc:
    """``main(data, weight, out)``: one reduction block over the input channels, in the
    output dtype; with ``acc_dtype`` another, into a buffer of it that a ``cast`` block
    rounds into ``out``."""
    nd, sp = spec.ndim, spec.spatial_axes
    acc_dtype = acc_dtype or spec.out_dtype
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_transpose_single_pixel")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            weight = T.arg("weight", T.buffer([_i64(d) for d in spec.weight_shape], spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            extents = [spec.batch, spec.out_channels] + list(spec.out_size) + [spec.in_channels]
            acc = out
            if acc_dtype != spec.out_dtype:
                acc = T.sblock_alloc_buffer([_i64(d) for d in spec.out_shape], acc_dtype)
            with T.grid(*[_i64(e) for e in extents]) as loops:
                with T.sblock("phase_" + "_".join("0" * nd)):
                    iters = T.axis.remap("SS" + "S" * nd + "R", loops, dtype=INDEX_DTYPE)
                    n, oc, outs, c = iters[0], iters[1], iters[2:2 + nd], iters[2 + nd]
                    T.sblock_attr({PHASE_ANNOTATION: [0] * nd})
                    zero = {a: _i64(0) for a in sp}
                    taps = {a: o + _i64(pb) for a, o, pb in zip(sp, outs, spec.pad_before)}
                    y_idx = _index(spec.out_layout, dict(zip(sp, outs), N=n, C=oc))
                    x = data[tuple(_index(spec.data_layout, dict(zero, N=n, C=c)))]
                    w = weight[tuple(_index(spec.kernel_layout, dict(taps, I=c, O=oc)))]
                    with T.init():
                        T.buffer_store(acc, tirx.const(0, acc_dtype), y_idx)
                    T.buffer_store(acc, acc[tuple(y_idx)] + x.astype(acc_dtype)
                                   * w.astype(acc_dtype), y_idx)
            if acc is not out:
                with T.grid(*[_i64(e) for e in spec.out_shape]) as loops:
                    with T.sblock("cast"):
                        idx = T.axis.remap("S" * len(loops), loops, dtype=INDEX_DTYPE)
                        T.buffer_store(out, acc[tuple(idx)].astype(spec.out_dtype), list(idx))
    return builder.get()


def gpu_single_pixel_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """:func:`single_pixel_compute` accumulating float16 in float32 (dlight schedules the
    reduction with the cast as its epilogue)."""
    return single_pixel_compute(spec, accumulate_dtype(spec))


def schedule_single_pixel(sch: s_tir.Schedule, target: Target) -> None:
    """Parallel over (output channel × position) chunks; inside, the input-channel reduction
    around a register block of (batch × output vectors); fused epilogues parallel and
    vectorised."""
    lanes = vector_lanes(target)
    conv, *epilogues = root_blocks(sch)
    loops = sch.get_loops(conv)
    n, flat, reduce_c = loops[0], sch.fuse(*loops[1:-1]), loops[-1]
    extent = int(sch.get(flat).extent)
    if extent % lanes == 0:
        # The batch sits inside the channel loop so each weight vector is loaded once for all
        # images; the register block shrinks as the batch grows.
        batch = int(sch.get(n).extent)
        per_step = max(1, VECTORS_PER_STEP // batch)
        per_step = per_step if extent % (lanes * per_step) == 0 else 1
        outer, vectors, lane = sch.split(flat, [None, per_step, lanes])
        sch.reorder(outer, reduce_c, n, vectors, lane)
        sch.parallel(outer)
        sch.vectorize(lane)  # before decompose_reduction: TIR checks it on the whole block
        sch.unroll(vectors)
        init = sch.decompose_reduction(conv, reduce_c)
        sch.vectorize(sch.get_loops(init)[-1])
    else:
        sch.parallel(flat)
    for block in epilogues:
        block_loops = sch.get_loops(block)
        fused = sch.fuse(*block_loops)
        if int(sch.get(fused).extent) % lanes == 0:
            outer, inner = sch.split(fused, [None, lanes])
            sch.parallel(outer)
            sch.vectorize(inner)
        else:
            sch.parallel(fused)
