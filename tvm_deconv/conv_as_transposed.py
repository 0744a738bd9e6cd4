"""Stride-1 ordinary 2-d convs with few output channels, run as stride-1 transposed convs.

``conv2d(x, W, padding=(pb, pa))`` with stride 1, dilation 1 and one group equals
``conv2d_transpose(x, W', padding=(k-1-pb, k-1-pa))`` with
``W'[i, o, ky, kx] = W[o, i, k-1-ky, k-1-kx]``: the same output size, the same MACs.  The
transposed-conv x86 kernel (:mod:`tvm_deconv.schedules.x86`) then takes it, and for few output
channels it beats the dilated/ordinary-conv kernel (12-channel tiles there waste a quarter of
the lanes and store every output element as a scalar): FSRCNN x3 end to end went from 0.65-0.70x
to 1.28-1.63x ONNX Runtime (``tvm-deconv bench --models fsrcnn_x3``).  The weight transform is
a Relax flip + transpose of the weight, folded at compile time for constant weights.
"""

from __future__ import annotations

import logging

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import strategy
from .dilated import dilated_spec_from_call
from .plan import PlanError, make_spec
from .transform import _current_target, describe_call, rewrite_relax_functions

logger = logging.getLogger("tvm_deconv")

# Routed and not, side by side (benchmarks/x86_conv_route_ab.py): 1.3-2.2x faster at 3-56 output
# channels (CycleGAN's 64->3 head: 37x, the dilated kernel declines 3 channels), 0.88-0.99x on
# CycleGAN's 3->64 stem; larger convs keep their kernel.
MAX_OUT_CHANNELS = 56
IMPLEMENTATION = "x86.decomposed"


def transposed_equivalent(call: relax.Call):
    """``(ConvTransposeSpec, spec of the conv)`` of a ``relax.nn.conv2d`` call this pass
    rewrites (its dtypes are left to the implementation's own predicate), or ``None``."""
    spec, _ = dilated_spec_from_call(call)
    if spec is None or spec.ndim != 2 or (spec.data_layout, spec.kernel_layout,
                                          spec.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    if any(s != 1 for s in spec.strides + spec.dilation) or spec.groups != 1:
        return None
    pads = ([k - 1 - p for k, p in zip(spec.kernel, spec.pad_before)]
            + [k - 1 - p for k, p in zip(spec.kernel, spec.pad_after)])
    if spec.out_channels > MAX_OUT_CHANNELS or min(pads) < 0:
        return None
    try:
        tspec = make_spec(spec.data_shape, (spec.in_channels, spec.out_channels) + spec.kernel,
                          strides=1, padding=pads, dtype=spec.dtype, out_dtype=spec.out_dtype)
    except PlanError:
        return None
    return tspec, spec


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, target):
        super().__init__(mod)
        self.target = target

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return call
        found = transposed_equivalent(call)
        if found is None:
            return call
        tspec, spec = found
        selection = strategy.select(strategy.CONV_TRANSPOSE, tspec, self.target)
        if selection.implementation is None or selection.implementation.name != IMPLEMENTATION:
            return call
        logger.info("tvm_deconv: %s runs as the equivalent stride-1 transposed conv (%s)",
                    describe_call(call, spec), IMPLEMENTATION)
        weight = self.builder_.emit(relax.op.permute_dims(
            relax.op.flip(relax.op.flip(call.args[1], axis=2), axis=3), [1, 0, 2, 3]))
        return relax.op.nn.conv2d_transpose(call.args[0], weight, strides=1,
                                            padding=tspec.pad_before + tspec.pad_after,
                                            out_dtype=spec.out_dtype)


@tvm.transform.module_pass(opt_level=0, name="ConvAsTransposedConv")
class ConvAsTransposedConv:
    """Rewrite stride-1, undilated, ungrouped NCHW ``relax.nn.conv2d`` calls with at most
    :data:`MAX_OUT_CHANNELS` output channels into the equivalent ``relax.nn.conv2d_transpose``
    (flipped, transposed weight), where the target's transposed-conv implementation for it is
    :data:`IMPLEMENTATION` (float32 only).

    IR in: Relax functions (before :class:`~tvm_deconv.transform.DecomposeTransposedConv`).
    IR out: the same, those conv2d calls replaced by conv2d_transpose of
    ``permute_dims(flip(flip(weight)))``; one info line each on the ``tvm_deconv`` logger.
    """

    def __init__(self, target=None):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(_Rewriter(mod, _current_target(self.target)), mod)
