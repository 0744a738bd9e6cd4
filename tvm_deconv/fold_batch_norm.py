"""Inference BatchNorm folded into the conv before it, so it runs inside the conv's kernel.

``batch_norm(conv(x, W), gamma, beta, mean, var)[0]`` with constant statistics and a constant
weight equals ``conv(x, W') + b`` with, per output channel ``o``,
``scale[o] = gamma[o] / sqrt(var[o] + eps)``, ``W'`` = ``W`` scaled by ``scale`` along its
output-channel axis and ``b[o] = beta[o] - mean[o] * scale[o]``.  The bias add (and an activation
after it) then fuse into the conv's kernel as its epilogue, instead of a separate pass over the
output that TVM 0.27 runs as serial loops on a CPU (DCGAN's and pix2pix's BatchNorm + ReLU).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .transform import rewrite_relax_functions

logger = logging.getLogger("tvm_deconv")

# conv op -> (kernel layouts it folds, index of the output-channel axis in that layout)
FOLDABLE = {
    "relax.nn.conv1d_transpose": ("IOW", 1),
    "relax.nn.conv2d_transpose": ("IOHW", 1),
    "relax.nn.conv3d_transpose": ("IODHW", 1),
    "relax.nn.conv1d": ("OIW", 0),
    "relax.nn.conv2d": ("OIHW", 0),
    "relax.nn.conv3d": ("OIDHW", 0),
}


def _constant(expr) -> Optional[np.ndarray]:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def folded_weight_and_bias(op_name: str, weight: np.ndarray, groups: int, scale: np.ndarray,
                           shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b)`` of a conv whose output channel ``o`` is then ``scale[o] * y + shift[o]``."""
    if FOLDABLE[op_name][1] == 0:  # O I ...: output channels first
        factor = scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    else:  # I O/G ...: output channel o = (i // (I/G)) * (O/G) + j
        cin, cog = weight.shape[:2]
        per_in = scale.reshape(groups, 1, cog).repeat(cin // groups, axis=1).reshape(cin, cog)
        factor = per_in.reshape(per_in.shape + (1,) * (weight.ndim - 2))
    return weight * factor, shift


@mutator
class _Folder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.folded = 0

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:  # pylint: disable=W0221
        item = self.visit_expr_post_order(op)
        bn = item.tuple_value
        if isinstance(bn, relax.Var):
            bn = self.lookup_binding(bn)
        if (item.index != 0 or not isinstance(bn, relax.Call)
                or not isinstance(bn.op, tvm.ir.Op) or bn.op.name != "relax.nn.batch_norm"
                or bn.attrs.training):
            return item
        conv = self.lookup_binding(bn.args[0]) if isinstance(bn.args[0], relax.Var) else None
        if (not isinstance(conv, relax.Call) or not isinstance(conv.op, tvm.ir.Op)
                or conv.op.name not in FOLDABLE):
            return item
        layout, _ = FOLDABLE[conv.op.name]
        stats = [_constant(a) for a in bn.args[1:5]]
        weight = _constant(conv.args[1])
        attrs = conv.attrs
        if (weight is None or any(s is None for s in stats) or int(bn.attrs.axis) != 1
                or attrs.kernel_layout != layout or attrs.data_layout[:2] != "NC"
                or (attrs.out_layout or attrs.data_layout)[:2] != "NC"
                or "float" not in str(weight.dtype)):
            return item
        gamma, beta, mean, var = (s.astype("float64") for s in stats)
        scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
        new_weight, bias = folded_weight_and_bias(conv.op.name, weight.astype("float64"),
                                                  int(attrs.groups), scale, beta - mean * scale)
        ndim = weight.ndim - 2
        folded = relax.Call(conv.op, [conv.args[0], relax.const(new_weight.astype(weight.dtype))],
                            attrs)
        self.folded += 1
        logger.info("tvm_deconv: batch_norm folded into the %s before it", conv.op.name)
        return relax.op.add(self.builder_.emit(folded), relax.const(
            bias.astype(weight.dtype).reshape((1, -1) + (1,) * ndim)))


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold inference ``relax.nn.batch_norm`` into the conv (ordinary or transposed, 1-3 d,
    NC.. data, default kernel layout, constant weight) whose output it normalises.

    IR in: Relax functions with ``batch_norm(conv(x, W), ...)[0]`` and constant ``W`` and
    statistics (``tvm_deconv.build`` binds ``params`` first).  IR out: ``conv(x, W') + b``,
    ``W'`` and ``b`` computed here (float64, cast back); the unused ``batch_norm`` and conv are
    removed.  Anything else (training mode, non-constant weights, other layouts) is unchanged.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        folder = _Folder(mod)
        out = rewrite_relax_functions(folder, mod)
        if not folder.folded:
            return mod
        # the replaced conv and batch_norm bindings are dead: drop them (per function, so no
        # function of the module is removed)
        return relax.transform.DeadCodeElimination(
            [gv.name_hint for gv, f in out.functions_items() if isinstance(f, relax.Function)])(out)
