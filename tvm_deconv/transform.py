"""Relax passes that put the decomposed transposed conv into a model.

* :class:`DecomposeTransposedConv` (before legalization): ``relax.nn.conv{1,2,3}d_transpose``
  calls → ``R.call_tir`` of the decomposed PrimFunc chosen by the strategy registry.
* :class:`ApplyDeconvSchedule` (after FuseOps/FuseTIR): schedules every PrimFunc holding
  decomposed blocks, fused epilogues included, with its implementation's schedule.
"""

from __future__ import annotations

import logging
from typing import Optional

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.target import Target

from . import strategy
from .plan import ConvTransposeSpec, make_spec
from .targets import TargetLike, resolve_target

logger = logging.getLogger("tvm_deconv")

IMPL_ANNOTATION = "tvm_deconv.impl"
OPAQUE = 8  # relax.OpPatternKind.kOpaque
MODES = ("fused", "graph")
TRANSPOSED_CONV_OPS = {
    "relax.nn.conv1d_transpose": 1,
    "relax.nn.conv2d_transpose": 2,
    "relax.nn.conv3d_transpose": 3,
}


def _current_target(target: Optional[TargetLike]) -> Target:
    if target is not None:
        return resolve_target(target)
    current = Target.current(allow_none=True)
    return current if current is not None else resolve_target("llvm")


def _static_shape(expr: relax.Expr) -> Optional[tuple[int, ...]]:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    if not all(isinstance(v, tirx.IntImm) for v in shape.values):
        return None
    return tuple(int(v) for v in shape.values)


def spec_from_call(call: relax.Call) -> tuple[Optional[ConvTransposeSpec], str]:
    """The spec of a transposed-conv call, or ``(None, why it is not supported)``.

    Invalid attributes raise :class:`~tvm_deconv.plan.PlanError` (they would be wrong under
    any lowering); unsupported-but-valid calls return a reason instead.
    """
    data, weight = call.args[0], call.args[1]
    data_shape, weight_shape = _static_shape(data), _static_shape(weight)
    if data_shape is None or weight_shape is None:
        return None, "symbolic (dynamic) shapes are not supported"
    attrs = call.attrs
    spec = make_spec(
        data_shape, weight_shape, strides=attrs.strides, padding=attrs.padding,
        output_padding=attrs.output_padding, dilation=attrs.dilation, groups=int(attrs.groups),
        data_layout=str(attrs.data_layout), kernel_layout=str(attrs.kernel_layout),
        out_layout=str(attrs.out_layout), dtype=str(data.ty.dtype), out_dtype=str(call.ty.dtype))
    if str(weight.ty.dtype) != spec.dtype:
        return None, f"data dtype {spec.dtype} differs from weight dtype {weight.ty.dtype}"
    return spec, ""


def annotate_implementation(func: tirx.PrimFunc, impl_name: str) -> tirx.PrimFunc:
    """Tag every root block of ``func`` with the implementation that must schedule it."""
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        sch.annotate(block, IMPL_ANNOTATION, impl_name)
    return sch.mod["main"]


def describe_call(call: relax.Call, spec) -> str:
    """A conv call for a log line: its op, and its shapes and attributes when ``spec`` is known."""
    if spec is None:
        return call.op.name
    return (f"{call.op.name}(data {spec.data_shape} {spec.data_layout}, weight "
            f"{spec.weight_shape} {spec.kernel_layout}, strides={spec.strides}, "
            f"dilation={spec.dilation}, groups={spec.groups}, {spec.dtype}->{spec.out_dtype})")


def rewrite_relax_functions(mutator: PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """Run ``mutator`` (built on ``mod``) over every Relax function of ``mod``."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def add_function(builder: relax.BlockBuilder, funcs: dict, key, func, name, make=None
                 ) -> relax.GlobalVar:
    """The GlobalVar of PrimFunc ``func`` (or ``make()``) added once per ``key`` to the module."""
    if key not in funcs:
        func = func if func is not None else make()
        funcs[key] = builder.add_func(func.without_attr("global_symbol"), name)
    return funcs[key]


def emit_packed_weight(builder: relax.BlockBuilder, funcs: dict, weight: relax.Expr, spec,
                       impl_name: str, pack) -> relax.Expr:
    """``weight`` through the implementation's ``pack`` PrimFunc (``None``: unchanged); a
    constant weight is packed at compile time by FoldConstant."""
    if pack is None:
        return weight
    packed = pack.params[-1]  # TVM 0.27: PrimFunc params are the buffers
    pack_gv = add_function(builder, funcs, ("pack", spec, impl_name), pack,
                           f"pack_weight_{impl_name}")
    return builder.emit(relax.call_tir(
        pack_gv, [weight], relax.TensorType([int(d) for d in packed.shape], packed.dtype)))


def _finished(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A complete kernel (tuned, or hand-laid): epilogues kept out of it (opaque) and marked
    done, so neither fusion nor the schedulers touch it."""
    return func.with_attr("op_pattern", OPAQUE).with_attr("tirx.is_scheduled", True)


@mutator
class _TransposedConvRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, target: Target, database=None,
                 warn_untuned: bool = False):
        super().__init__(mod)
        self.target = target
        self.database = database
        self.warn_untuned = warn_untuned
        self._funcs: dict[tuple, relax.GlobalVar] = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in TRANSPOSED_CONV_OPS:
            return call
        spec, why = spec_from_call(call)
        impl = None
        if spec is not None:
            selection = strategy.select(strategy.CONV_TRANSPOSE, spec, self.target)
            impl, why = selection.implementation, selection.reason()
        if impl is None:
            logger.warning("tvm_deconv: %s falls back to TVM's default lowering: %s",
                           describe_call(call, spec), why)
            return call
        passed_over = [f"{name} declined: {reason}" for name, reason in selection.declined
                       if strategy.get(name).serves(self.target)]
        if passed_over:
            logger.info("tvm_deconv: %s uses %s (%s)", describe_call(call, spec), impl.name,
                        "; ".join(passed_over))
        out_ty = relax.TensorType(spec.out_shape, spec.out_dtype)
        tuned = self._tuned(spec, impl) if self.database is not None else None
        if tuned is not None:
            name, func, pack = tuned
            weight = self._packed(call.args[1], spec, name, pack)
            gv = self._add((spec, name, "tuned"), func, f"conv{spec.ndim}d_transpose_tuned")
            return relax.call_tir(gv, [call.args[0], weight], out_ty)
        weight = self._packed(call.args[1], spec, impl.name,
                              impl.pack(spec) if impl.pack is not None else None)
        gv = self._add((spec, impl.name), None, f"conv{spec.ndim}d_transpose_decomposed",
                       lambda: self._compute(spec, impl))
        return relax.call_tir(gv, [call.args[0], weight], out_ty)

    def _compute(self, spec: ConvTransposeSpec, impl) -> tirx.PrimFunc:
        """``impl``'s PrimFunc for ``spec``: tagged for ApplyDeconvSchedule, or a finished
        kernel (``impl.scheduled``) kept out of fusion, for its own target if it names one."""
        if not impl.scheduled:
            return annotate_implementation(impl.compute(spec), impl.name)
        func = _finished(impl.compute(spec))
        if impl.kernel_target is not None:
            func = func.with_attr("target", impl.kernel_target(self.target))
        return func

    def _tuned(self, spec: ConvTransposeSpec, impl):
        """(implementation, scheduled PrimFunc, pack) of the best tuning record, if any."""
        from .tuning import (  # noqa: C0415
            DEFAULT, SPACES, best_schedule, realized, spec_label, workload_func)

        best, timed_default = None, False
        for space in SPACES:
            workload = workload_func(spec, space, self.target)
            if workload is None:
                continue
            name, func, pack = workload
            found = best_schedule(self.database, tvm.IRModule({"main": func}), self.target)
            timed_default |= found is not None and space == DEFAULT
            if found is not None and (best is None or found[1] < best[1]):
                best = (found[0], found[1], name, pack, space)
        if best is None:
            log = logger.warning if self.warn_untuned else logger.info
            log("tvm_deconv: no tuning record for %s; using %s's default schedule",
                spec_label(spec), impl.name)
            return None
        sch, secs, name, pack, space = best
        if not timed_default and space != DEFAULT:
            # Without the default schedule's own record (e.g. its compute changed since the
            # log was made) nothing says the tuned record beats it: stock records were seen
            # 10-30x slower than the default schedule.
            logger.warning("tvm_deconv: %s has a %s record (%.3f ms when tuned) but none for "
                           "%s's default schedule to compare it with; keeping the default "
                           "schedule (tune with the default space to compare)",
                           spec_label(spec), space, secs * 1e3, impl.name)
            return None
        logger.info("tvm_deconv: %s uses its tuned %s schedule (%s space, %.3f ms when tuned)",
                    spec_label(spec), name, space, secs * 1e3)
        return name, _finished(realized(sch.mod)["main"]), pack

    def _packed(self, weight: relax.Expr, spec: ConvTransposeSpec, impl_name: str, pack
                ) -> relax.Expr:
        return emit_packed_weight(self.builder_, self._funcs, weight, spec, impl_name, pack)

    def _add(self, key, func, name, make=None) -> relax.GlobalVar:
        return add_function(self.builder_, self._funcs, key, func, name, make)


@tvm.transform.module_pass(opt_level=0, name="DecomposeTransposedConv")
class DecomposeTransposedConv:
    """Rewrite supported transposed convs into decomposed PrimFuncs.

    IR in: Relax functions calling ``relax.nn.conv{1,2,3}d_transpose``.
    IR out: each supported call replaced by ``R.call_tir`` of an unscheduled PrimFunc with
    ``op_pattern`` = out-elementwise-fusable (so FuseOps/FuseTIR fuse bias and activations
    into it) and blocks tagged with the implementation name.  Calls no implementation takes
    stay as they are for TVM's ``LegalizeOps``, with one warning line each saying why.

    ``mode="graph"`` (Split Deconvolution) instead rewrites each call into ``prod(strides)``
    ordinary ``relax.nn.conv{1,2,3}d`` calls plus a stock-op interleave
    (:class:`~tvm_deconv.graph_mode.SplitTransposedConvToConv`), for backends that only know
    standard convolution (BYOC libraries, accelerators).

    With a MetaSchedule ``database`` (see :func:`tvm_deconv.tuning.load_tuning_logs`), a call
    whose workload has records gets the best tuned kernel (over our space and the stock
    space) instead, already scheduled and kept out of fusion; calls without records log so
    and keep the default schedule.
    """

    def __init__(self, target: Optional[TargetLike] = None, database=None,
                 warn_untuned: bool = False, mode: str = "fused"):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use 'fused' (decomposed PrimFuncs) or 'graph' "
                             "(ordinary Relax convolutions any backend runs)")
        self.target = target
        self.database = database
        self.warn_untuned = warn_untuned
        self.mode = mode

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.mode == "graph":
            from .graph_mode import SplitTransposedConvToConv  # pylint: disable=C0415

            return SplitTransposedConvToConv()(mod)
        rewriter = _TransposedConvRewriter(mod, _current_target(self.target), self.database,
                                           self.warn_untuned)
        return rewrite_relax_functions(rewriter, mod)


def implementation_of(func: tirx.PrimFunc) -> Optional[str]:
    """The implementation tag of a PrimFunc's decomposed blocks (``None`` if it has none)."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        return None
    for block in _sblocks_of(func.body.block.body):
        name = block.annotations.get(IMPL_ANNOTATION)
        if name is not None:
            return str(name)
    return None


def _root_block(func: tirx.PrimFunc):
    realize = func.body
    return realize, realize.block


def _sblocks_of(stmt) -> list:
    """The blocks of one top-level loop nest of a root block (perfect nests and sequences)."""
    if isinstance(stmt, s_tir.SBlockRealize):
        return [stmt.block] + _sblocks_of(stmt.block.body)
    if isinstance(stmt, tirx.For):
        return _sblocks_of(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        return [b for s in stmt.seq for b in _sblocks_of(s)]
    return []


def inline_prologue(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with the loop nests before its first decomposed block (the injective producers
    :class:`~tvm_deconv.fuse_prologue.FusePrologue` put there) inlined into that block (the
    padded-data copy of our CPU kernels), when they feed it alone.

    ``compute_inline`` needs a stage pipeline, which our root block is not (every phase writes
    the output), so the producers and the copy are inlined in a function of their own and the
    copy's new nest goes back in place of all of them.
    """
    realize, root = _root_block(func)
    stmts = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    first = next((i for i, st in enumerate(stmts)
                  if any(IMPL_ANNOTATION in b.annotations for b in _sblocks_of(st))), 0)
    if first == 0:
        return func
    made = {r.source for st in stmts[:first] for b in _sblocks_of(st) for r in b.writes}
    read_later = {r.source for st in stmts[first + 1:] for b in _sblocks_of(st) for r in b.reads}
    if not made <= set(root.alloc_buffers) or made & read_later:
        return func
    pad_writes = {r.source for b in _sblocks_of(stmts[first]) for r in b.writes}

    def with_root(body, allocs):
        block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                             root.init, allocs, root.match_buffers, root.annotations)
        return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))

    try:
        sch = s_tir.Schedule(with_root(
            tirx.SeqStmt(stmts[:first + 1]),
            [b for b in root.alloc_buffers if b in made or b in pad_writes]))
        for block in list(sch.get_child_blocks(sch.get_sblock("root")))[:-1]:
            sch.compute_inline(block)
        body = [_root_block(sch.mod["main"])[1].body] + stmts[first + 1:]
        return with_root(body[0] if len(body) == 1 else tirx.SeqStmt(body),
                         [b for b in root.alloc_buffers if b not in made])
    except Exception as err:  # pylint: disable=broad-except
        logger.info("tvm_deconv: kept a fused prologue as loop nests of its own (%s)",
                    str(err).splitlines()[0])
        return func


@tvm.transform.module_pass(opt_level=0, name="ApplyDeconvSchedule")
class ApplyDeconvSchedule:
    """Schedule the PrimFuncs that hold decomposed transposed convs.

    IR in: PrimFuncs (fused or not) whose blocks carry ``tvm_deconv.impl``.
    IR out: those PrimFuncs scheduled by their implementation and marked
    ``tirx.is_scheduled`` (so dlight leaves them alone).  If a schedule raises, the PrimFunc
    stays unscheduled (still correct: the CPU runs it as is, dlight schedules it on GPUs) and
    a warning says so.
    """

    def __init__(self, target: Optional[TargetLike] = None):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = _current_target(self.target)
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled"):
                continue
            impl_name = implementation_of(func)
            if impl_name is None:
                continue
            impl = strategy.get(impl_name)
            if impl.schedule is None:
                continue
            sch = s_tir.Schedule(inline_prologue(func))
            try:
                impl.schedule(sch, target)
            except Exception as err:  # pylint: disable=broad-except
                logger.warning("tvm_deconv: schedule %s failed on %s (%s); using it unscheduled",
                               impl_name, gv.name_hint, err)
                continue
            updates[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        for gv, func in updates.items():
            mod[gv] = func
        return mod
