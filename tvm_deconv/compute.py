"""TIR compute definitions of the decomposed transposed convolution.

One PrimFunc per transposed conv, built from :mod:`tvm_deconv.plan`:

* one reduction block per output phase with taps (``phase_<r...>``), a dense stride-1
  correlation of the ORIGINAL input with the phase's ragged sub-kernel, storing straight into
  the strided positions ``o = r + q*s`` of the final interleaved output;
* one spatial block per phase without taps (``zero_<r...>``, only when k < s), which writes
  zeros and computes nothing.

There is no zero-inserted tensor and no interleave pass.  Why TIR and not a single TE compute:
TE gives each tensor one compute body, so several reductions cannot write one output buffer;
a TIR PrimFunc may hold several blocks writing disjoint parts of it.  The blocks are in the
canonical form TVM's schedules expect (one loop per block iterator, no schedule applied), so
``tvm.compile`` runs the PrimFunc as is, and dlight / MetaSchedule / our schedules work on it.

Every block carries the annotation ``tvm_deconv.phase`` (the phase index), which survives
FuseOps/FuseTIR and lets the schedule pass find the decomposed conv inside fused functions.
"""

from __future__ import annotations

import functools
import operator
from typing import Sequence

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from .plan import ConvTransposeSpec, Phase, TransposedConvPlan, make_plan, make_spec

PHASE_ANNOTATION = "tvm_deconv.phase"
# Blocks of :func:`phase_batched_conv_transpose`: "conv" (all phases) or "store".
BATCHED_ANNOTATION = "tvm_deconv.batched"
# The zero-padded input copy of the GPU forms (:func:`_padded_data_block`).
PADDED_INPUT_ANNOTATION = "tvm_deconv.padded_input"
# relax.OpPatternKind.kOutEWiseFusable: elementwise consumers (bias, activation) fuse into it.
OUT_ELEMWISE_FUSABLE = 4
INDEX_DTYPE = "int64"


def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm(INDEX_DTYPE, value)


def _index(layout: str, by_axis: dict) -> list:
    return [by_axis[a] for a in layout]


def _phase_block(plan: TransposedConvPlan, phase: Phase, data, weight, out, acc=None,
                 pads: dict | None = None, tap_offset: int | None = None) -> None:
    """Emit the loop nest and reduction block of one phase with taps.

    With ``acc`` (a dense buffer of the phase's extent) the block reduces into it instead of
    the strided output; :func:`_store_block` then copies it out.  With ``pads`` the input is
    :func:`_padded_data_block`'s (read unguarded); with ``tap_offset`` the weight is
    :func:`decomposed_pack`'s and this phase's taps start at that offset.
    """
    spec = plan.spec
    nd, sp = spec.ndim, spec.spatial_axes
    extents = ([spec.batch, spec.out_channels] + list(phase.extent) + [spec.in_per_group]
               + list(phase.num_taps))
    kinds = "SS" + "S" * nd + "R" + "R" * nd
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock(phase.name):
            iters = T.axis.remap(kinds, loops, dtype=INDEX_DTYPE)
            n, oc, qs, ric, js = iters[0], iters[1], iters[2:2 + nd], iters[2 + nd], iters[3 + nd:]
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index)})
            if spec.groups == 1:
                ic, oc_in_group = ric, oc
            else:
                group = tirx.floordiv(oc, _i64(spec.out_per_group))
                ic = group * _i64(spec.in_per_group) + ric
                oc_in_group = tirx.floormod(oc, _i64(spec.out_per_group))
            in_idx, tap_idx, out_idx, guards = {}, {}, {}, []
            for a, ap, axis_plan, q, j in zip(sp, phase.axes, plan.axes, qs, js):
                in_idx[a] = ap.input_index(q, j)
                tap_idx[a] = _i64(ap.tap_start) + j * _i64(ap.tap_step)
                out_idx[a] = q * _i64(ap.stride) + _i64(ap.phase)
                if pads is not None:
                    in_idx[a] = in_idx[a] + _i64(pads[a][0])
                    continue
                lowest, highest = ap.input_span()
                if lowest < 0:
                    guards.append(in_idx[a] >= _i64(0))
                if highest >= axis_plan.in_size:
                    guards.append(in_idx[a] < _i64(axis_plan.in_size))
            x = data[tuple(_index(spec.data_layout, dict(in_idx, N=n, C=ic)))]
            if guards:
                x = tirx.if_then_else(tirx.all(*guards), x, tirx.const(0, spec.dtype))
            if tap_offset is None:
                w = weight[tuple(_index(spec.kernel_layout,
                                        dict(tap_idx, I=ic, O=oc_in_group)))]
            else:
                w = weight[_i64(tap_offset) + flat_index(js, phase.num_taps), ic, oc_in_group]
            dst, y_idx = out, _index(spec.out_layout, dict(out_idx, N=n, C=oc))
            if acc is not None:
                dst, y_idx = acc, [n, oc] + list(qs)
            with T.init():
                T.buffer_store(dst, tirx.const(0, spec.out_dtype), y_idx)
            T.buffer_store(dst, dst[tuple(y_idx)] + x.astype(spec.out_dtype)
                           * w.astype(spec.out_dtype), y_idx)


def _store_block(spec: ConvTransposeSpec, phase: Phase, acc, out) -> None:
    """Copy a phase's dense accumulator into its strided positions of the output."""
    extents = [spec.batch, spec.out_channels] + list(phase.extent)
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock("store_" + phase.name[len("phase_"):]):
            iters = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index)})
            out_idx = {a: q * _i64(ap.stride) + _i64(ap.phase)
                       for a, ap, q in zip(spec.spatial_axes, phase.axes, iters[2:])}
            y_idx = _index(spec.out_layout, dict(out_idx, N=iters[0], C=iters[1]))
            T.buffer_store(out, acc[tuple(iters)], y_idx)


def _zero_block(spec: ConvTransposeSpec, phase: Phase, out) -> None:
    """Emit the block of a phase that receives no tap (k < s): its outputs are zero."""
    extents = [spec.batch, spec.out_channels] + list(phase.extent)
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock("zero_" + phase.name[len("phase_"):]):
            iters = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index)})
            out_idx = {a: q * _i64(ap.stride) + _i64(ap.phase)
                       for a, ap, q in zip(spec.spatial_axes, phase.axes, iters[2:])}
            y_idx = _index(spec.out_layout, dict(out_idx, N=iters[0], C=iters[1]))
            T.buffer_store(out, tirx.const(0, spec.out_dtype), y_idx)


def flat_index(js, extents) -> tirx.PrimExpr:
    """Row-major flat index of ``js`` in a grid of ``extents``."""
    idx = _i64(0)
    for j, e in zip(js, extents):
        idx = idx * _i64(e) + j
    return idx


def pack_signature(name: str, spec, packed_shape) -> tuple:
    """Inside ``T.prim_func``: name a weight-packing PrimFunc and declare its ``(weight,
    packed_weight)`` parameters (``spec``: any spec with ``weight_shape`` and ``dtype``);
    returns the two buffers."""
    T.func_name(name)
    T.func_attr({"tirx.noalias": True})
    weight = T.arg("weight", T.buffer([_i64(d) for d in spec.weight_shape], spec.dtype))
    packed = T.arg("packed_weight", T.buffer([_i64(d) for d in packed_shape], spec.dtype))
    return weight, packed


def decomposed_packed_shape(spec: ConvTransposeSpec) -> list[int]:
    """Shape of :func:`decomposed_pack`'s weight: ``[taps of every phase, Cin, Cout/groups]``
    (the phases' sub-kernels end to end, each tap a K-major matrix, output channels
    contiguous)."""
    return [make_plan(spec).tap_offsets()[1], spec.in_channels, spec.out_per_group]


def decomposed_pack(spec: ConvTransposeSpec,
                    weight_of: ConvTransposeSpec | None = None) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)`` of ``decomposed_conv_transpose(..,
    packed_weight=True)``; FoldConstant runs it at compile time for a constant weight.
    ``weight_of``: the weight is that spec's, whose kernel ``spec``'s extends with zero taps
    (:func:`~tvm_deconv.plan.stride_multiple_kernel`): taps past it are packed as zeros."""
    plan = make_plan(spec)
    offsets, _ = plan.tap_offsets()
    shape = decomposed_packed_shape(spec)
    source = weight_of or spec
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature(f"conv{spec.ndim}d_transpose_decomposed_pack",
                                            source, shape)
            for phase in plan.phases():
                if not phase.has_taps:
                    continue
                extents = list(phase.num_taps) + shape[1:]
                with T.grid(*[_i64(e) for e in extents]) as loops:
                    with T.sblock("pack_" + phase.name[len("phase_"):]):
                        it = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
                        js, ic, oc = it[:-2], it[-2], it[-1]
                        kidx = {a: _i64(ap.tap_start) + j * _i64(ap.tap_step)
                                for a, ap, j in zip(spec.spatial_axes, phase.axes, js)}
                        kidx.update(I=ic, O=oc)
                        # Added (zero) taps: the read is clamped into the weight, the value
                        # replaced by zero.
                        added = [(a, k) for a, k, k2 in zip(spec.spatial_axes, source.kernel,
                                                            spec.kernel) if k < k2]
                        past = [kidx[a] >= _i64(k) for a, k in added]
                        kidx.update({a: tirx.min(kidx[a], _i64(k - 1)) for a, k in added})
                        value = weight[tuple(_index(spec.kernel_layout, kidx))]
                        if past:
                            value = tirx.if_then_else(functools.reduce(tirx.Or, past),
                                                      tirx.const(0, spec.dtype), value)
                        T.buffer_store(packed, value,
                                       [_i64(offsets[phase.index]) + flat_index(js, phase.num_taps),
                                        ic, oc])
    return builder.get()


def decomposed_conv_transpose(spec: ConvTransposeSpec, name: str | None = None,
                              phase_buffers: bool = False,
                              packed_weight: bool = False) -> tirx.PrimFunc:
    """The decomposed transposed conv of ``spec`` as an unscheduled PrimFunc.

    Signature ``(data, weight, out)`` in the spec's layouts; ``op_pattern`` is set to
    out-elementwise-fusable so Relax's FuseOps fuses bias/activation consumers into it.

    ``phase_buffers=True`` gives the form TIR's reduction-block primitives accept
    (``decompose_reduction``, ``cache_write``, ``reorder`` across reduction loops, and so
    MetaSchedule's stock space): each phase reduces into its own dense accumulator and a
    ``store_<r>`` block copies it into the strided output.  Those primitives require a
    reduction block to be the only writer of its buffer, which the direct form is not.  A
    schedule that ``reverse_compute_at``'s the store into the phase's tile keeps the
    accumulator tile-sized; unscheduled, it is one output-sized workspace.

    ``packed_weight=True`` (the GPU form) takes :func:`decomposed_pack`'s weight and reads
    a zero-padded copy of the input (a ``pad`` block) instead of bounds-checking each read.
    """
    plan = make_plan(spec)
    offsets = plan.tap_offsets()[0] if packed_weight else {}
    name = name or f"conv{spec.ndim}d_transpose_decomposed"
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(name)
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            wshape = decomposed_packed_shape(spec) if packed_weight else spec.weight_shape
            weight = T.arg("weight", T.buffer([_i64(d) for d in wshape], spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            pads = None
            if packed_weight:
                data, pads = _padded_data_block(spec, plan, data)
            for phase in plan.phases():
                if phase.is_empty:
                    continue
                operands = dict(pads=pads, tap_offset=offsets.get(phase.index))
                if phase.has_taps and phase_buffers:
                    acc = T.alloc_buffer([_i64(d) for d in (spec.batch, spec.out_channels)
                                          + phase.extent], spec.out_dtype)
                    _phase_block(plan, phase, data, weight, out, acc, **operands)
                    _store_block(spec, phase, acc, out)
                elif phase.has_taps:
                    _phase_block(plan, phase, data, weight, out, **operands)
                else:
                    _zero_block(spec, phase, out)
    return builder.get()


def accumulate_dtype(spec: ConvTransposeSpec) -> str:
    """float16 convs accumulate in float32 (the output is rounded once, at the store)."""
    return "float32" if spec.out_dtype == "float16" else spec.out_dtype


def phase_batched_conv_transpose(spec: ConvTransposeSpec, name: str | None = None,
                                 split_k: int = 1) -> tirx.PrimFunc:
    """All phases in ONE reduction block, for plans where that wastes nothing.

    Requires ``make_plan(spec).phase_batched`` (dilation 1, k % s == 0, s | out: every phase
    has the same taps count and extent).  The block iterates ``(n, oc, r1, .., q1, ..,
    ric, j1, ..)`` and reduces into a dense accumulator ``acc[n, oc, r1, .., q1, ..]`` of
    :func:`accumulate_dtype`; the phase ``r`` enters the input index through the plan's
    closed form :meth:`~tvm_deconv.plan.AxisPlan.batched_input`.  The weight is
    :func:`decomposed_pack`'s: with equal tap counts its flat tap axis is the row-major
    ``(r.., j..)`` grid, so no kernel index (a ``floormod`` of ``r``) is computed here.  The
    input is read from a zero-padded copy (a ``pad`` block), unguarded.
    A ``store`` block writes ``out[.., q*s + r, ..] = acc`` (casting when accumulating in
    float32): it is the only writer of the output, a bijection, so the PrimFunc is a stage
    pipeline — epilogues fuse after it and every TIR primitive applies (GPU schedules: one
    kernel for all phases instead of one per phase).

    ``split_k`` > 1 (split-K, dividing Cin; groups 1): the block iterates ``(n, oc, k, r..,
    q.., ric, j..)`` over ``split_k`` slices ``k`` of the input channels into
    ``acc[n, oc, k, r.., q..]``, a ``partial`` block copies those partial sums out (the GPU
    schedule's write-back of the GEMM) and ``store`` adds them up.
    """
    plan = make_plan(spec)
    if not plan.phase_batched:
        raise ValueError(f"{spec} is not phase-batched (needs dilation 1, k % s == 0, s | out)")
    if split_k > 1 and (spec.groups != 1 or spec.in_channels % split_k):
        raise ValueError(f"split_k={split_k} needs groups 1 and a divisor of "
                         f"{spec.in_channels} input channels")
    nd, sp = spec.ndim, spec.spatial_axes
    acc_dtype = accumulate_dtype(spec)
    grid = [ax.stride for ax in plan.axes] + [ax.out_size // ax.stride for ax in plan.axes]
    taps = [ax.max_taps for ax in plan.axes]
    slices = [split_k] if split_k > 1 else []
    slice_channels = spec.in_per_group // split_k
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(name or f"conv{nd}d_transpose_phase_batched")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            weight = T.arg("weight", T.buffer([_i64(d) for d in decomposed_packed_shape(spec)],
                                              spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            acc_shape = [spec.batch, spec.out_channels] + slices + grid
            acc = T.sblock_alloc_buffer([_i64(d) for d in acc_shape], acc_dtype)
            data, pads = _padded_data_block(spec, plan, data)
            spatial = len(acc_shape)
            extents = acc_shape + [slice_channels] + taps
            with T.grid(*[_i64(e) for e in extents]) as loops:
                with T.sblock("phases"):
                    it = T.axis.remap("S" * spatial + "R" * (1 + nd), loops, dtype=INDEX_DTYPE)
                    n, oc, qr, ric, js = (it[0], it[1], it[spatial - 2 * nd:spatial],
                                          it[spatial], it[spatial + 1:])
                    if split_k > 1:
                        ric = it[2] * _i64(slice_channels) + ric
                    T.sblock_attr({PHASE_ANNOTATION: [-1] * nd, BATCHED_ANNOTATION: "conv"})
                    if spec.groups == 1:
                        ic, oc_in_group = ric, oc
                    else:
                        ic = tirx.floordiv(oc, _i64(spec.out_per_group)) * _i64(
                            spec.in_per_group) + ric
                        oc_in_group = tirx.floormod(oc, _i64(spec.out_per_group))
                    in_idx = {a: ax.batched_input(r, q, j) + _i64(pads[a][0])
                              for a, ax, r, q, j in zip(sp, plan.axes, qr[:nd], qr[nd:], js)}
                    x = data[tuple(_index(spec.data_layout, dict(in_idx, N=n, C=ic)))]
                    w = weight[flat_index(list(qr[:nd]) + list(js), grid[:nd] + taps), ic,
                               oc_in_group]
                    with T.init():
                        T.buffer_store(acc, tirx.const(0, acc_dtype), list(it[:spatial]))
                    T.buffer_store(acc, acc[tuple(it[:spatial])] + x.astype(acc_dtype)
                                   * w.astype(acc_dtype), list(it[:spatial]))
            if split_k > 1:
                partial = T.sblock_alloc_buffer([_i64(d) for d in acc_shape], acc_dtype)
                with T.grid(*[_i64(e) for e in acc_shape]) as loops:
                    with T.sblock("partial"):
                        it = T.axis.remap("S" * spatial, loops, dtype=INDEX_DTYPE)
                        T.sblock_attr({PHASE_ANNOTATION: [-1] * nd,
                                       BATCHED_ANNOTATION: "partial"})
                        T.buffer_store(partial, acc[tuple(it)], list(it))
                acc = partial
            with T.grid(*[_i64(e) for e in [spec.batch, spec.out_channels] + grid]) as loops:
                with T.sblock("store"):
                    it = T.axis.remap("S" * (2 + 2 * nd), loops, dtype=INDEX_DTYPE)
                    T.sblock_attr({PHASE_ANNOTATION: [-1] * nd, BATCHED_ANNOTATION: "store"})
                    qr = it[2:]
                    out_idx = {a: q * _i64(ax.stride) + r
                               for a, ax, r, q in zip(sp, plan.axes, qr[:nd], qr[nd:])}
                    y_idx = _index(spec.out_layout, dict(out_idx, N=it[0], C=it[1]))
                    total = acc[tuple(it)] if split_k == 1 else functools.reduce(
                        operator.add, [acc[tuple([it[0], it[1], _i64(k)] + list(qr))]
                                       for k in range(split_k)])
                    T.buffer_store(out, total.astype(spec.out_dtype), y_idx)
    return builder.get()


def _padded_data_block(spec: ConvTransposeSpec, plan: TransposedConvPlan, data,
                       layout: str | None = None):
    """(input, pads): a ``pad`` block copying ``data`` with :meth:`AxisPlan.input_pads`
    zeros around each spatial axis (``pads[axis] = (before, after)``), so the conv reads it
    unguarded (GPU schedules inline it into the shared-memory copy, where the bounds check
    then runs once per staged element); ``data`` itself where no phase reads outside it.
    ``layout``: the copy's axis order (default: the input's; another one always copies)."""
    layout = layout or spec.data_layout
    pads = {a: ax.input_pads() for a, ax in zip(spec.spatial_axes, plan.axes)}
    if layout == spec.data_layout and not any(lo or hi for lo, hi in pads.values()):
        return data, pads
    sizes = dict(zip(spec.data_layout, spec.data_shape))
    shape = [sizes[a] + sum(pads.get(a, (0, 0))) for a in layout]
    padded = T.sblock_alloc_buffer([_i64(d) for d in shape], spec.dtype)
    with T.grid(*[_i64(d) for d in shape]) as loops:
        with T.sblock("pad"):
            it = T.axis.remap("S" * len(shape), loops, dtype=INDEX_DTYPE)
            T.sblock_attr({PADDED_INPUT_ANNOTATION: 1})
            src, guards = {}, []
            for a, i in zip(layout, it):
                lo = pads.get(a, (0, 0))[0]
                src[a] = i - _i64(lo)
                if a in pads:
                    guards += [i >= _i64(lo), i < _i64(lo + sizes[a])]
            T.buffer_store(padded, tirx.if_then_else(
                tirx.all(*guards), data[tuple(_index(spec.data_layout, src))],
                tirx.const(0, spec.dtype)), list(it))
    return padded, pads


def _conv_nd_transpose(ndim: int, data_shape: Sequence[int], weight_shape: Sequence[int],
                       **attrs) -> tirx.PrimFunc:
    spec = make_spec(data_shape, weight_shape, **attrs)
    if spec.ndim != ndim:
        raise ValueError(f"conv{ndim}d_transpose got {spec.ndim}-d shapes {tuple(data_shape)}")
    return decomposed_conv_transpose(spec)


def conv1d_transpose(data_shape, weight_shape, strides=1, padding=0, output_padding=0,
                     dilation=1, groups=1, data_layout=None, kernel_layout=None,
                     out_layout=None, dtype="float32", out_dtype=None) -> tirx.PrimFunc:
    """Decomposed 1-d transposed conv (attributes as ``relax.op.nn.conv1d_transpose``)."""
    return _conv_nd_transpose(1, data_shape, weight_shape, strides=strides, padding=padding,
                              output_padding=output_padding, dilation=dilation, groups=groups,
                              data_layout=data_layout, kernel_layout=kernel_layout,
                              out_layout=out_layout, dtype=dtype, out_dtype=out_dtype)


def conv2d_transpose(data_shape, weight_shape, strides=1, padding=0, output_padding=0,
                     dilation=1, groups=1, data_layout=None, kernel_layout=None,
                     out_layout=None, dtype="float32", out_dtype=None) -> tirx.PrimFunc:
    """Decomposed 2-d transposed conv (attributes as ``relax.op.nn.conv2d_transpose``).

    Layouts: NCHW data with IOHW kernel (PyTorch/ONNX) or NHWC with HWOI (TensorFlow's
    ``conv2d_transpose`` filter); any other permutation of the letters works too.
    """
    return _conv_nd_transpose(2, data_shape, weight_shape, strides=strides, padding=padding,
                              output_padding=output_padding, dilation=dilation, groups=groups,
                              data_layout=data_layout, kernel_layout=kernel_layout,
                              out_layout=out_layout, dtype=dtype, out_dtype=out_dtype)


def conv3d_transpose(data_shape, weight_shape, strides=1, padding=0, output_padding=0,
                     dilation=1, groups=1, data_layout=None, kernel_layout=None,
                     out_layout=None, dtype="float32", out_dtype=None) -> tirx.PrimFunc:
    """Decomposed 3-d transposed conv (attributes as ``relax.op.nn.conv3d_transpose``)."""
    return _conv_nd_transpose(3, data_shape, weight_shape, strides=strides, padding=padding,
                              output_padding=output_padding, dilation=dilation, groups=groups,
                              data_layout=data_layout, kernel_layout=kernel_layout,
                              out_layout=out_layout, dtype=dtype, out_dtype=out_dtype)
