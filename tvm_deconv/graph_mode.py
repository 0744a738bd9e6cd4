"""Off-the-shelf mode (Split Deconvolution): transposed conv → ``s^d`` ordinary convs.

:class:`SplitTransposedConvToConv` rewrites each ``relax.nn.conv{1,2,3}d_transpose`` into
stock Relax ops only, so ANY backend that runs ``conv{1,2,3}d`` runs it:

* per output phase with taps (:mod:`tvm_deconv.plan`), one ``relax.nn.conv{d}d`` of the
  ORIGINAL input with the phase's sub-kernel, flipped (``conv`` is a correlation reading
  increasing input indices, the plan's taps read decreasing ones) and laid out ``OI...``
  (``groups`` kept), dilation = the plan's ``in_step``; its padding comes from the plan's
  ``in_start``/``num_taps``/``extent``; every phase produces ``ceil(out/s)`` elements per axis
  so they stack;
* phases without taps (k < s): ``relax.op.zeros``;
* interleave (depth-to-space): nested ``stack`` + one ``reshape``, then a ``strided_slice``
  crop when an output size is not a multiple of the stride (and when a phase would need
  negative conv padding).

Sub-kernels are ``relax.const`` computed at compile time when the weight is a constant; else
they are extracted with ``strided_slice``/``flip``/``reshape``/``permute_dims``.  Data in other
layouts is permuted to ``NC...`` and back with ``permute_dims``.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .plan import AxisPhase, TransposedConvPlan, make_plan
from .transform import rewrite_relax_functions, spec_from_call

logger = logging.getLogger("tvm_deconv")

TRANSPOSED_CONV_OPS = {
    "relax.nn.conv1d_transpose": 1,
    "relax.nn.conv2d_transpose": 2,
    "relax.nn.conv3d_transpose": 3,
}
_CONV = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}


def axis_conv_params(ap: AxisPhase, in_size: int, extent: int) -> tuple[int, int, int]:
    """Padding of one axis of a phase's sub-conv, from the plan.

    The phase computes ``y[q] = sum_j x[q + in_start - j*in_step] * w[tap_start + j*tap_step]``.
    With the sub-kernel flipped (``j' = num_taps-1-j``) that is the correlation
    ``y[q] = sum_j' x[q + c + j'*in_step] * wflip[j']``, with
    ``c = in_start - (num_taps-1)*in_step``, i.e. a conv with dilation ``in_step`` and ``pad_before = -c``.  Conv padding must be
    non-negative: returns ``(pad_before, pad_after, crop)`` where the conv's output element
    ``crop + q`` is the phase's element ``q`` for ``q in range(extent)``.
    """
    c = ap.input_span()[0]
    pad_before = -c
    # conv output size = in + pb + pa - in_step*(num_taps-1) must cover `extent`
    pad_after = extent + ap.in_step * (ap.num_taps - 1) - in_size - pad_before
    crop = max(0, -pad_before)
    return max(0, pad_before), max(0, pad_after), crop


def _canonical_axes(layout: str, canonical: str) -> list[int]:
    return [layout.index(a) for a in canonical]


class _Emitter:
    """Emits the stock-op graph of one transposed conv into a BlockBuilder."""

    def __init__(self, builder: relax.BlockBuilder, plan: TransposedConvPlan):
        self.bb = builder
        self.plan = plan
        self.spec = plan.spec

    def emit(self, data: relax.Expr, weight: relax.Expr) -> relax.Expr:
        spec, plan, bb = self.spec, self.plan, self.bb
        nd, sp = spec.ndim, spec.spatial_axes
        if spec.data_layout != "NC" + sp:
            data = bb.emit(relax.op.permute_dims(data, _canonical_axes(spec.data_layout,
                                                                       "NC" + sp)))
        weight_const = weight.value.numpy() if isinstance(weight, tvm.ir.expr.Constant) else None
        if weight_const is not None:
            weight_const = np.transpose(weight_const,
                                        _canonical_axes(spec.kernel_layout, "IO" + sp))
        elif spec.kernel_layout != "IO" + sp:
            weight = bb.emit(relax.op.permute_dims(weight, _canonical_axes(spec.kernel_layout,
                                                                           "IO" + sp)))
        blocks = [-(-o // s) for o, s in zip(spec.out_size, spec.strides)]  # ceil(out / s)
        phase_out = {}
        for phase in plan.phases():
            shape = [spec.batch, spec.out_channels] + blocks
            if not phase.has_taps:
                phase_out[phase.index] = bb.emit(relax.op.zeros(shape, spec.out_dtype))
                continue
            sub = (self._const_subkernel(weight_const, phase) if weight_const is not None
                   else self._graph_subkernel(weight, phase))
            pads, crops = [], []
            for ap, n, e in zip(phase.axes, spec.in_size, blocks):
                pb, pa, crop = axis_conv_params(ap, n, e)
                pads.append((pb, pa))
                crops.append(crop)
            y = bb.emit(_CONV[nd](
                data, sub, strides=1, padding=[p[0] for p in pads] + [p[1] for p in pads],
                dilation=[ap.in_step for ap in phase.axes], groups=spec.groups,
                data_layout="NC" + sp, kernel_layout="OI" + sp, out_dtype=spec.out_dtype))
            conv_sizes = [n + pb + pa - ap.in_step * (ap.num_taps - 1)
                          for n, (pb, pa), ap in zip(spec.in_size, pads, phase.axes)]
            if any(crops) or conv_sizes != blocks:
                axes = list(range(2, 2 + nd))
                y = bb.emit(relax.op.strided_slice(
                    y, axes, crops, [c + e for c, e in zip(crops, blocks)]))
            phase_out[phase.index] = y
        out = self._interleave(phase_out, blocks)
        if spec.out_layout != "NC" + sp:
            out = bb.emit(relax.op.permute_dims(out, _canonical_axes("NC" + sp,
                                                                     spec.out_layout)))
        return out

    def _interleave(self, phase_out: dict, blocks: list[int]) -> relax.Expr:
        """Depth-to-space: stack phases as (N, C, B0, s0, B1, s1, ...), reshape, crop."""
        spec, bb = self.spec, self.bb
        nd = spec.ndim

        def nest(prefix: tuple[int, ...]) -> relax.Expr:
            axis = len(prefix)
            if axis == nd:
                return phase_out[prefix]
            parts = [nest(prefix + (r,)) for r in range(spec.strides[axis])]
            if len(parts) == 1:
                return bb.emit(relax.op.expand_dims(parts[0], 3 + axis))
            # parts: (N, C, B_0 .. B_axis, B_{axis+1}, s_{axis+1}, ...); stack right after B_axis
            return bb.emit(relax.op.stack(parts, axis=3 + axis))

        stacked = nest(())
        full = [b * s for b, s in zip(blocks, spec.strides)]
        out = bb.emit(relax.op.reshape(stacked, [spec.batch, spec.out_channels] + full))
        if full != list(spec.out_size):
            out = bb.emit(relax.op.strided_slice(out, list(range(2, 2 + nd)), [0] * nd,
                                                 list(spec.out_size)))
        return out

    def _const_subkernel(self, w: np.ndarray, phase) -> relax.Constant:
        """Sub-kernel of a phase, ``(O, I/groups, *taps)`` flipped, computed now."""
        spec = self.spec
        taps = tuple(slice(ap.tap_start, ap.tap_start + (ap.num_taps - 1) * ap.tap_step + 1,
                           ap.tap_step) for ap in phase.axes)
        sub = w[(slice(None), slice(None)) + taps]                 # (I, O/g, T...)
        sub = sub[(slice(None), slice(None)) + (slice(None, None, -1),) * spec.ndim]
        sub = sub.reshape((spec.groups, spec.in_per_group, spec.out_per_group) + sub.shape[2:])
        sub = np.swapaxes(sub, 1, 2).reshape(
            (spec.out_channels, spec.in_per_group) + sub.shape[3:])
        return relax.const(np.ascontiguousarray(sub), spec.dtype)

    def _graph_subkernel(self, w: relax.Expr, phase) -> relax.Expr:
        """Same as :meth:`_const_subkernel`, with stock Relax ops on a non-constant weight."""
        spec, bb = self.spec, self.bb
        nd = spec.ndim
        axes = list(range(2, 2 + nd))
        begin = [ap.tap_start for ap in phase.axes]
        end = [ap.tap_start + (ap.num_taps - 1) * ap.tap_step + 1 for ap in phase.axes]
        sub = bb.emit(relax.op.strided_slice(w, axes, begin, end,
                                             [ap.tap_step for ap in phase.axes]))
        for axis, ap in zip(axes, phase.axes):
            if ap.num_taps > 1:
                sub = bb.emit(relax.op.flip(sub, axis))
        taps = [ap.num_taps for ap in phase.axes]
        if spec.groups == 1:
            perm = [1, 0] + axes
            return bb.emit(relax.op.permute_dims(sub, perm))
        sub = bb.emit(relax.op.reshape(
            sub, [spec.groups, spec.in_per_group, spec.out_per_group] + taps))
        sub = bb.emit(relax.op.permute_dims(sub, [0, 2, 1] + [a + 1 for a in axes]))
        return bb.emit(relax.op.reshape(sub, [spec.out_channels, spec.in_per_group] + taps))


@mutator
class _SplitRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in TRANSPOSED_CONV_OPS:
            return call
        spec, why = spec_from_call(call)
        if spec is None:
            logger.warning("tvm_deconv: graph mode leaves %s as it is: %s", call.op.name, why)
            return call
        return _Emitter(self.builder_, make_plan(spec)).emit(call.args[0], call.args[1])


@tvm.transform.module_pass(opt_level=0, name="SplitTransposedConvToConv")
class SplitTransposedConvToConv:
    """Rewrite transposed convs into ``prod(strides)`` ordinary convs + interleave.

    IR in: Relax functions calling ``relax.nn.conv{1,2,3}d_transpose`` (before LegalizeOps).
    IR out: stock Relax ops only (``conv{d}d``, ``zeros``, ``stack``, ``reshape``,
    ``strided_slice``, ``permute_dims``, ``flip``, ``expand_dims``): no ``call_tir``, no
    PrimFunc.  Calls with symbolic shapes stay as they are, with one warning line each.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(_SplitRewriter(mod), mod)


def conv_count(plan: TransposedConvPlan) -> int:
    """Number of ordinary convs the graph mode emits for ``plan`` (phases with taps)."""
    return sum(1 for p in plan.phases() if p.has_taps)


__all__ = ["SplitTransposedConvToConv", "axis_conv_params", "conv_count"]
