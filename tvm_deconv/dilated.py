"""Dilated (atrous) convolution, untangled (HUGE2), in ONE PrimFunc.

A conv with dilation ``d`` multiplies by the zeros inserted in its kernel when a backend makes
the dilated kernel dense.  Here the output is split into its phases (:mod:`tvm_deconv.plan`,
:func:`~tvm_deconv.plan.plan_dilated_axis`): phase ``r`` is a dense correlation of input phase
``b`` (every ``d``-th input element: space-to-batch) with the ORIGINAL kernel, stored into every
``P``-th output element (batch-to-space).  One reduction block per phase reads the original
data layout and writes the original output layout: no space-to-batch copy, no intermediate
buffer, no zero MAC.

* :func:`dilated_conv1d`, :func:`dilated_conv2d`, :func:`dilated_conv3d`: the unscheduled
  PrimFunc ``(data, weight, out)`` (attributes as Relax's ``conv{1,2,3}d``).
* :class:`DecomposeDilatedConv`: Relax pass, ``relax.nn.conv{1,2,3}d`` with dilation > 1 (and
  ordinary convs, dilation 1, where a packed register-tiled implementation takes them) →
  ``R.call_tir`` of the PrimFunc of the implementation the strategy registry picks (op pattern
  out-elementwise-fusable, so bias/activations fuse), through its weight ``pack`` when it has one
  (``x86.dilated``/``arm_cpu.dilated``: ``schedules/x86_dilated.py``; stride-1 1-d convs into
  NCW outputs on x86: ``x86.conv1d_positions``, ``schedules/x86_positions.py``).
* :func:`dilated_conv_reference`: float64 numpy reference (oracle for the tests).
"""

from __future__ import annotations

import itertools
import logging
from typing import Optional

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from . import strategy
from .compute import INDEX_DTYPE, OUT_ELEMWISE_FUSABLE, PHASE_ANNOTATION, _i64, _index
from .transform import (_current_target, _static_shape, add_function, annotate_implementation,
                        describe_call, emit_packed_weight, rewrite_relax_functions)
from .plan import (DilatedConvPlan, DilatedConvSpec, DilatedPhase, PlanError,
                   make_dilated_plan, make_dilated_spec)

logger = logging.getLogger("tvm_deconv")

# Blocks of the untangled dilated conv carry PHASE_ANNOTATION (the phase index) like the
# transposed-conv blocks, plus this one, so schedules can tell the two ops apart.
OP_ANNOTATION = "tvm_deconv.op"
DILATED_CONV = "dilated_conv"
CONV_OPS = {"relax.nn.conv1d": 1, "relax.nn.conv2d": 2, "relax.nn.conv3d": 3}


def _phase_block(plan: DilatedConvPlan, phase: DilatedPhase, data, weight, out) -> None:
    spec = plan.spec
    nd, sp = spec.ndim, spec.spatial_axes
    extents = ([spec.batch, spec.out_channels] + list(phase.extent) + [spec.in_per_group]
               + list(spec.kernel))
    kinds = "SS" + "S" * nd + "R" + "R" * nd
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock(phase.name):
            iters = T.axis.remap(kinds, loops, dtype=INDEX_DTYPE)
            n, oc, qs, ric, ts = iters[0], iters[1], iters[2:2 + nd], iters[2 + nd], iters[3 + nd:]
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index), OP_ANNOTATION: DILATED_CONV})
            if spec.groups == 1:
                ic = ric
            else:
                ic = tirx.floordiv(oc, _i64(spec.out_per_group)) * _i64(spec.in_per_group) + ric
            in_idx, out_idx, guards = {}, {}, []
            for a, ap, axis_plan, q, t in zip(sp, phase.axes, plan.axes, qs, ts):
                # row q*m + t + a of input phase b, in the ORIGINAL layout
                in_idx[a] = ((q * _i64(ap.in_step) + t + _i64(ap.in_start)) * _i64(ap.dilation)
                             + _i64(ap.in_phase))
                out_idx[a] = q * _i64(ap.num_phases) + _i64(ap.phase)
                if ap.lowest_input < 0:
                    guards.append(in_idx[a] >= _i64(0))
                if ap.highest_input >= axis_plan.in_size:
                    guards.append(in_idx[a] < _i64(axis_plan.in_size))
            acc = spec.out_dtype
            x = data[tuple(_index(spec.data_layout, dict(in_idx, N=n, C=ic)))]
            if guards:
                x = tirx.if_then_else(tirx.all(*guards), x, tirx.const(0, spec.dtype))
            w = weight[tuple(_index(spec.kernel_layout, dict(zip(sp, ts), O=oc, I=ric)))]
            y_idx = _index(spec.out_layout, dict(out_idx, N=n, C=oc))
            with T.init():
                T.buffer_store(out, tirx.const(0, acc), y_idx)
            T.buffer_store(out, out[tuple(y_idx)] + x.astype(acc) * w.astype(acc), y_idx)


def untangled_dilated_conv(spec: DilatedConvSpec, name: Optional[str] = None) -> tirx.PrimFunc:
    """The untangled dilated conv of ``spec`` as one unscheduled PrimFunc ``(data, weight, out)``
    in the spec's layouts (``op_pattern`` out-elementwise-fusable)."""
    plan = make_dilated_plan(spec)
    name = name or f"conv{spec.ndim}d_dilated_untangled"
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(name)
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            weight = T.arg("weight", T.buffer([_i64(d) for d in spec.weight_shape], spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            for phase in plan.phases():
                if not phase.is_empty:
                    _phase_block(plan, phase, data, weight, out)
    return builder.get()


def _dilated_nd(ndim: int, data_shape, weight_shape, **attrs) -> tirx.PrimFunc:
    spec = make_dilated_spec(data_shape, weight_shape, **attrs)
    if spec.ndim != ndim:
        raise ValueError(f"dilated_conv{ndim}d got {spec.ndim}-d shapes {tuple(data_shape)}")
    return untangled_dilated_conv(spec)


def dilated_conv1d(data_shape, weight_shape, strides=1, padding=0, dilation=1, groups=1,
                   data_layout=None, kernel_layout=None, out_layout=None, dtype="float32",
                   out_dtype=None) -> tirx.PrimFunc:
    """Untangled 1-d dilated conv (attributes as ``relax.op.nn.conv1d``; NCW/OIW default)."""
    return _dilated_nd(1, data_shape, weight_shape, strides=strides, padding=padding,
                       dilation=dilation, groups=groups, data_layout=data_layout,
                       kernel_layout=kernel_layout, out_layout=out_layout, dtype=dtype,
                       out_dtype=out_dtype)


def dilated_conv2d(data_shape, weight_shape, strides=1, padding=0, dilation=1, groups=1,
                   data_layout=None, kernel_layout=None, out_layout=None, dtype="float32",
                   out_dtype=None) -> tirx.PrimFunc:
    """Untangled 2-d dilated conv (attributes as ``relax.op.nn.conv2d``; NCHW/OIHW default,
    any permutation of the letters works)."""
    return _dilated_nd(2, data_shape, weight_shape, strides=strides, padding=padding,
                       dilation=dilation, groups=groups, data_layout=data_layout,
                       kernel_layout=kernel_layout, out_layout=out_layout, dtype=dtype,
                       out_dtype=out_dtype)


def dilated_conv3d(data_shape, weight_shape, strides=1, padding=0, dilation=1, groups=1,
                   data_layout=None, kernel_layout=None, out_layout=None, dtype="float32",
                   out_dtype=None) -> tirx.PrimFunc:
    """Untangled 3-d dilated conv (attributes as ``relax.op.nn.conv3d``)."""
    return _dilated_nd(3, data_shape, weight_shape, strides=strides, padding=padding,
                       dilation=dilation, groups=groups, data_layout=data_layout,
                       kernel_layout=kernel_layout, out_layout=out_layout, dtype=dtype,
                       out_dtype=out_dtype)


def dilated_conv_reference(data: np.ndarray, weight: np.ndarray, spec: DilatedConvSpec,
                           bias: Optional[np.ndarray] = None) -> np.ndarray:
    """Float64 textbook dilated conv (gather definition, no plan), output in ``spec.out_layout``."""
    sp = spec.spatial_axes
    x = np.transpose(np.asarray(data, np.float64), [spec.data_layout.index(a) for a in "NC" + sp])
    w = np.transpose(np.asarray(weight, np.float64),
                     [spec.kernel_layout.index(a) for a in "OI" + sp])
    x = np.pad(x, [(0, 0), (0, 0)] + list(zip(spec.pad_before, spec.pad_after)))
    out_size = spec.out_size
    out = np.zeros((spec.batch, spec.out_channels, *out_size))
    cig, cog = spec.in_per_group, spec.out_per_group
    for grp in range(spec.groups):
        xg = x[:, grp * cig:(grp + 1) * cig]
        wg = w[grp * cog:(grp + 1) * cog]
        for taps in itertools.product(*(range(k) for k in spec.kernel)):
            src = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in
                        zip(taps, spec.dilation, out_size, spec.strides))
            out[:, grp * cog:(grp + 1) * cog] += np.einsum(
                "nc...,oc->no...", xg[(slice(None), slice(None)) + src],
                wg[(slice(None), slice(None)) + taps])
    if bias is not None:
        out = out + np.asarray(bias, np.float64).reshape((1, -1) + (1,) * spec.ndim)
    return np.transpose(out, [("NC" + sp).index(a) for a in spec.out_layout])


# ------------------------------------------------------------------------------- Relax pass


def dilated_spec_from_call(call: relax.Call) -> tuple[Optional[DilatedConvSpec], str]:
    """The spec of a ``relax.nn.conv{1,2,3}d`` call, or ``(None, why it is not handled)``."""
    data, weight = call.args[0], call.args[1]
    data_shape, weight_shape = _static_shape(data), _static_shape(weight)
    if data_shape is None or weight_shape is None:
        return None, "symbolic (dynamic) shapes are not supported"
    attrs = call.attrs
    dtype, wdtype = str(data.ty.dtype), str(weight.ty.dtype)
    out_dtype = str(call.ty.dtype)
    if not dtype.startswith(("float", "bfloat")):
        return None, f"dtype {dtype} is not a float type"
    if wdtype != dtype:
        return None, f"data dtype {dtype} differs from weight dtype {wdtype}"
    try:
        spec = make_dilated_spec(
            data_shape, weight_shape, strides=attrs.strides, padding=attrs.padding,
            dilation=attrs.dilation, groups=int(attrs.groups),
            data_layout=str(attrs.data_layout), kernel_layout=str(attrs.kernel_layout),
            out_layout=str(attrs.out_layout), dtype=dtype, out_dtype=out_dtype)
    except PlanError as err:
        return None, str(err)
    return spec, ""


@mutator
class _DilatedConvRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, target):
        super().__init__(mod)
        self.target = target
        self._funcs: dict[tuple, relax.GlobalVar] = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in CONV_OPS:
            return call
        dense = all(int(d) == 1 for d in call.attrs.dilation)
        spec, why = dilated_spec_from_call(call)
        impl = None
        if spec is not None:
            selection = strategy.select(DILATED_CONV, spec, self.target)
            impl, why = selection.implementation, selection.reason()
        if dense and (impl is None or impl.pack is None or spec.in_per_group == 1):
            # An ordinary conv: taken only by a packed, register-tiled implementation (TVM
            # 0.27 has no CPU conv2d schedule: its default ran 12-38x slower on pix2pix's
            # convs), and not with one input channel per group (2.2x slower than the default
            # on FSRCNN's 1->56 k5 feature layer); else untouched.
            return call
        if impl is None:
            logger.warning("tvm_deconv: dilated %s keeps TVM's default lowering: %s",
                           describe_call(call, spec), why)
            return call
        if selection.declined:
            logger.info("tvm_deconv: dilated %s uses %s: %s", describe_call(call, spec),
                        impl.name, selection.reason())
        weight = emit_packed_weight(self.builder_, self._funcs, call.args[1], spec, impl.name,
                                    impl.pack(spec) if impl.pack is not None else None)
        gv = add_function(self.builder_, self._funcs, (spec, impl.name), None,
                          f"conv{spec.ndim}d_dilated_untangled",
                          lambda: annotate_implementation(impl.compute(spec), impl.name))
        return relax.call_tir(gv, [call.args[0], weight],
                              relax.TensorType(spec.out_shape, spec.out_dtype))


@tvm.transform.module_pass(opt_level=0, name="DecomposeDilatedConv")
class DecomposeDilatedConv:
    """Rewrite ``relax.nn.conv{1,2,3}d`` calls with dilation > 1 into untangled PrimFuncs, and
    ordinary convs (dilation 1: one phase) where the target's implementation packs weights and
    register-tiles (x86, AArch64), since TVM 0.27 has no tuned-free CPU conv schedule.

    IR in: Relax functions (before LegalizeOps).  IR out: each dilated conv with static shapes
    and a float dtype replaced by ``R.call_tir`` of the chosen implementation's untangled
    PrimFunc (op pattern out-elementwise-fusable; blocks annotated ``tvm_deconv.phase`` and
    ``tvm_deconv.op = "dilated_conv"``), its weight first through the implementation's pack
    PrimFunc when it has one (folded at compile time for constant weights).  Undilated convs
    without such an implementation (or with one input channel per group) stay untouched;
    dilated calls that cannot be handled stay too, with one warning line each
    on the ``tvm_deconv`` logger (an info line when a preferred implementation declined).
    The implementation (and so the schedule :class:`ApplyDeconvSchedule` applies) comes from
    the strategy registry's ``"dilated_conv"`` entries for ``target``.
    """

    def __init__(self, target=None):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(_DilatedConvRewriter(mod, _current_target(self.target)), mod)


__all__ = ["DecomposeDilatedConv", "dilated_conv1d", "dilated_conv2d", "dilated_conv3d",
           "untangled_dilated_conv", "dilated_conv_reference", "dilated_spec_from_call"]
