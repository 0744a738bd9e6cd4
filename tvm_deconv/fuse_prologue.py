"""Injective producers of a decomposed conv's data input, fused into the conv's PrimFunc.

pix2pix activates *before* each conv (``conv(leaky_relu(x))``, ``conv_transpose(relu(concat(
skip, up)))``), HiFi-GAN before each up-conv.  TVM's FuseOps fuses elementwise ops after a
conv, never before it, so each of those ran as a pass of its own over memory (with the skip
concatenations, 6.1 ms of pix2pix's 64 on the Sapphire Rapids-class Xeon).  Our CPU kernels
copy their input into a padded buffer anyway: :class:`FusePrologue` puts the producers into
the conv's fused function, FuseTIR into its PrimFunc, and
:func:`~tvm_deconv.transform.inline_prologue` (run by ``ApplyDeconvSchedule``) into that
copy, which then reads the concatenation's inputs and activates them on the way.
"""

from __future__ import annotations

import logging
from typing import Optional

import tvm
from tvm import relax

from .transform import implementation_of

logger = logging.getLogger("tvm_deconv")

INJECTIVE = 2  # relax.OpPatternKind.kInjective: elementwise, broadcast, concatenate, pad, ...
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _call_tir_parts(value) -> Optional[tuple]:
    """``(PrimFunc GlobalVar, args, out_ty)`` of a plain ``call_tir`` binding value."""
    if (isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR) and len(value.args) == 2
            and isinstance(value.args[1], relax.Tuple)):
        return value.args[0], list(value.args[1].fields), value.ty_args[0]
    return None


class _Calls:
    """The ``call_tir`` s one binding runs: itself, or the body of the grouped (primitive)
    function it calls, with that function's parameters."""

    def __init__(self, mod: tvm.IRModule, value):
        self.params, self.calls, self.args, self.result = None, [], [], None
        parts = _call_tir_parts(value)
        if parts is not None:
            self.calls, self.args = [(None, parts)], parts[1]
            return
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar)):
            return
        func = mod[value.op]
        if not (isinstance(func, relax.Function) and func.attrs is not None
                and func.attrs.get("Primitive")):
            return
        body = func.body
        calls = []
        for block in body.blocks:
            for binding in block.bindings:
                parts = _call_tir_parts(binding.value)
                if not isinstance(binding, relax.VarBinding) or parts is None:
                    return
                calls.append((binding.var, parts))
        if not isinstance(body.body, relax.Var):
            return
        self.params, self.calls, self.args, self.result = (list(func.params), calls,
                                                           list(value.args), body.body)

    def prim_funcs(self, mod):
        return [mod[gv] for _, (gv, _, _) in self.calls]

    def data_arg(self, mod) -> Optional[int]:
        """Index (among the binding's arguments) of the data input of the unscheduled
        decomposed conv it runs, or ``None``."""
        for _, (gv, args, _) in self.calls:
            func = mod[gv]
            if func.attrs.get("tirx.is_scheduled") or implementation_of(func) is None:
                continue
            if self.params is None:
                return 0
            for i, param in enumerate(self.params):
                if args[0].same_as(param):
                    return i
        return None

    def is_injective(self, mod) -> bool:
        return bool(self.calls) and all(
            int(f.attrs.get("op_pattern", 99)) <= INJECTIVE for f in self.prim_funcs(mod))

    def emit(self, builder: relax.BlockBuilder, args: list) -> relax.Var:
        """Emit the ``call_tir`` s into ``builder`` with ``args`` for the binding's arguments."""
        if self.params is None:
            gv, _, out_ty = self.calls[0][1]
            return builder.emit(relax.call_tir(gv, args, out_ty))
        env = {param: arg for param, arg in zip(self.params, args)}
        for var, (gv, call_args, out_ty) in self.calls:
            new_args = [env.get(a, a) if isinstance(a, relax.Var) else a for a in call_args]
            env[var] = builder.emit(relax.call_tir(gv, new_args, out_ty))
        return env[self.result]


def _operands(expr) -> list:
    """The Relax variables ``expr`` reads, once per occurrence."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _operands(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _operands(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _operands(expr.tuple_value)
    return []


def _use_counts(body: relax.SeqExpr) -> dict:
    counts: dict = {}
    values = [b.value for block in body.blocks for b in block.bindings] + [body.body]
    for value in values:
        for var in _operands(value):
            counts[var] = counts.get(var, 0) + 1
    return counts


def _fused_function(producer: _Calls, consumer: _Calls, data: int) -> tuple:
    """A grouped function running ``producer`` then ``consumer`` (``producer`` feeding its
    argument ``data``), and the arguments to call it with."""
    outer = producer.args + [a for i, a in enumerate(consumer.args) if i != data]
    params = [relax.Var(f"p{i}", a.ty) for i, a in enumerate(outer)]
    builder = relax.BlockBuilder()
    with builder.function("fused", params, {"Primitive": True}, private=True):
        with builder.dataflow():
            made = producer.emit(builder, params[:len(producer.args)])
            rest = params[len(producer.args):]
            out = consumer.emit(builder, rest[:data] + [made] + rest[data:])
            out = builder.emit_output(out)
        builder.emit_func_output(out)
    return builder.get()["fused"], outer


def _name(value) -> str:
    parts = _call_tir_parts(value)
    gv = parts[0] if parts is not None else value.op
    return gv.name_hint


@tvm.transform.module_pass(opt_level=0, name="tvm_deconv.FusePrologue")
class FusePrologue:
    """Fuse injective producers into the decomposed conv that reads them (CPU targets).

    IR in: FuseOps output.  A binding that runs an unscheduled decomposed conv (a ``call_tir``
    of it, or a call of the grouped function holding it with its epilogue) whose data input is
    made, for it alone, by injective PrimFuncs only (``call_tir`` s or one grouped function of
    them: activations, concatenations, pads).
    IR out: one grouped function running both, which FuseTIR turns into one PrimFunc; the
    producer's binding is gone.  Everything else is unchanged.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function) and not (
                    func.attrs is not None and func.attrs.get("Primitive")):
                mod = self._fuse_in(mod, gv, func)
        return mod

    @staticmethod
    def _fuse_in(mod: tvm.IRModule, gv, func: relax.Function) -> tvm.IRModule:
        if not isinstance(func.body, relax.SeqExpr):
            return mod
        uses = _use_counts(func.body)
        producers = {b.var: b for block in func.body.blocks for b in block.bindings
                     if isinstance(b, relax.VarBinding)}
        builder = relax.BlockBuilder(mod)
        fused, dropped = {}, set()
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    continue
                consumer = _Calls(mod, binding.value)
                data = consumer.data_arg(mod)
                if data is None or not isinstance(consumer.args[data], relax.DataflowVar):
                    continue
                source = producers.get(consumer.args[data])
                if source is None or uses.get(source.var, 0) != 1:
                    continue
                producer = _Calls(mod, source.value)
                if not producer.is_injective(mod):
                    continue
                new_func, args = _fused_function(producer, consumer, data)
                name = f"{_name(source.value)}_{_name(binding.value)}".replace("fused_", "")
                new_gv = builder.add_func(new_func, f"fused_{name}")
                fused[binding.var] = relax.Call(new_gv, args)
                dropped.add(source.var)
        if not fused:
            return mod
        blocks = []
        for block in func.body.blocks:
            bindings = [relax.VarBinding(b.var, fused[b.var]) if b.var in fused else b
                        for b in block.bindings if b.var not in dropped]
            kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) \
                else relax.BindingBlock
            blocks.append(kind(bindings))
        new_mod = builder.get()
        new_mod[gv] = relax.Function(func.params, relax.SeqExpr(blocks, func.body.body),
                                     func.ret_ty, func.is_pure, func.attrs)
        logger.info("tvm_deconv: fused %d producer(s) into the conv reading them in %s",
                    len(fused), gv.name_hint)
        return relax.transform.DeadCodeElimination()(new_mod)  # the groups it replaced

