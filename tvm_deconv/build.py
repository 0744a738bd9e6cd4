"""``build`` and ``pipeline``: the successors of ``relay.build`` for models with deconvs."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tvm
from tvm import relax

from .targets import TargetLike, resolve_target
from .conv_as_transposed import ConvAsTransposedConv
from .dilated import DecomposeDilatedConv
from .fold_batch_norm import FoldBatchNorm
from .fuse_prologue import FusePrologue
from .transform import ApplyDeconvSchedule, DecomposeTransposedConv


def _is_gpu(target: tvm.target.Target) -> bool:
    return "gpu" in target.keys


def _backend(target: tvm.target.Target):
    # pylint: disable=import-outside-toplevel
    if target.kind.name == "cuda":
        from tvm.relax.backend.cuda import pipeline as backend
    elif _is_gpu(target):
        from tvm.relax.backend.gpu_generic import pipeline as backend
    else:
        from tvm.relax.backend.cpu_generic import pipeline as backend
    return backend


def _gpu_default_schedule() -> tvm.transform.Pass:
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())


def _tuning_database(target: tvm.target.Target, tuning_logs):
    """(database or None, whether missing records deserve a warning)."""
    from .tuning import load_tuning_logs, shipped_log_dir  # pylint: disable=C0415

    if tuning_logs is False:
        return None, False
    if tuning_logs is None:
        shipped = shipped_log_dir(target)
        return (load_tuning_logs(shipped, target) if shipped else None), False
    return load_tuning_logs(tuning_logs, target), True


def front_passes(target: tvm.target.Target, decompose: bool = True, tuning_logs=None,
                 mode: str = "fused") -> list:
    """Library dispatch through :class:`ApplyDeconvSchedule`: what :func:`pipeline` runs before
    the rest-of-model records, dlight and the backend's lowering.  Out of it come fused
    PrimFuncs, ours marked ``tirx.is_scheduled``; the others are what rest-of-model tuning
    (:func:`tvm_deconv.tuning.tune`) extracts, so it lowers with these same passes."""
    passes = list(_backend(target).library_dispatch_passes(target))
    if decompose:
        database, warn_untuned = _tuning_database(target, tuning_logs)
        passes.append(FoldBatchNorm())
        if mode == "fused":  # (graph mode turns transposed convs into ordinary ones)
            passes.append(ConvAsTransposedConv(target))
        passes.append(DecomposeTransposedConv(target, database, warn_untuned, mode))
        passes.append(DecomposeDilatedConv(target))
    passes += [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
    ]
    if decompose and not _is_gpu(target):
        passes.append(FusePrologue())
    passes.append(relax.transform.FuseTIR())
    if decompose:
        passes.append(ApplyDeconvSchedule(target))
    return passes


def pipeline(target: TargetLike, decompose: bool = True, tuning_logs=None,
             mode: str = "fused") -> tvm.transform.Pass:
    """The Relax pipeline of ``target`` with the decomposed transposed conv in it.

    Library dispatch → :class:`FoldBatchNorm` → :class:`ConvAsTransposedConv` (fused mode) →
    :class:`DecomposeTransposedConv` → :class:`DecomposeDilatedConv` →
    LegalizeOps → AnnotateTIROpPattern →
    FoldConstant (weight transforms of constant weights) → FuseOps → (CPU:
    :class:`FusePrologue`) → FuseTIR →
    :class:`ApplyDeconvSchedule` → the rest-of-model records of ``tuning_logs``, if it has
    them (:class:`ApplyRestOfModelRecords`) → (GPU: dlight for everything else) → the
    backend's dataflow lowering and finalization.  ``decompose=False`` gives the same
    pipeline without the plugin (TVM's default lowering), for side-by-side comparisons.

    Unlike ``relax_pipeline="default"`` this one fuses on CPUs too.
    """
    target = resolve_target(target)
    backend = _backend(target)
    passes = front_passes(target, decompose, tuning_logs, mode)
    if decompose and tuning_logs not in (None, False):
        rest = _rest_database(target, tuning_logs)
        if rest is not None:
            passes.append(ApplyRestOfModelRecords(rest))
    if _is_gpu(target):
        passes.append(_gpu_default_schedule())
    passes += backend.dataflow_lower_passes(target) + backend.finalize_passes(target)

    @tvm.transform.module_pass(opt_level=0, name="tvm_deconv.pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _rest_database(target: tvm.target.Target, tuning_logs):
    """The rest-of-model records of a tuning log folder (its ``rest_of_model/`` subfolder),
    filtered to ``target`` like the rest of the log; ``None`` if it has none."""
    from pathlib import Path  # pylint: disable=import-outside-toplevel

    from .tuning import REST_DIR, existing_log, load_tuning_logs  # pylint: disable=C0415

    path = existing_log(Path(tuning_logs) / REST_DIR)
    return load_tuning_logs(path, target) if path is not None else None


@tvm.transform.module_pass(opt_level=0, name="tvm_deconv.ApplyRestOfModelRecords")
class ApplyRestOfModelRecords:
    """Fused PrimFuncs outside the plugin (batch norms, concatenations, activations that did
    not fuse into a conv) → MetaSchedule's best record for each, where the database has one
    (``relax.transform.MetaScheduleApplyDatabase``); PrimFuncs without a record, and ours
    (``tirx.is_scheduled``), pass through unchanged."""

    def __init__(self, database):
        self.database = database

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with self.database:
            return relax.transform.MetaScheduleApplyDatabase()(mod)


def build(
    mod: tvm.IRModule,
    target: TargetLike = "llvm",
    params: Optional[dict] = None,
    decompose: bool = True,
    tuning_logs=None,
    mode: str = "fused",
) -> relax.Executable:
    """Compile a Relax module with decomposed transposed convs; run it with
    ``relax.VirtualMachine(ex, dev)``.

    ``params`` (name → array) are bound as constants of ``main`` first, so weight transforms
    are folded at compile time.  ``tuning_logs`` and ``mode``: see :func:`pipeline`.
    """
    target = resolve_target(target)
    with lowering_context(target, decompose):
        return tvm.compile(bind_params(mod, params), target,
                           relax_pipeline=pipeline(target, decompose, tuning_logs, mode))


# On CPUs the TIR pipeline's NarrowDataType(32) rewrites the kernels' int64 indices as int32
# sums, which LLVM sign-extends per load once its reassociation has dropped their no-overflow
# flags (two extra integer ops per broadcast in the FMA loop): pix2pix's 256 -> 64 deconv ran
# 1.27-1.4x faster with 64-bit indices, FSRCNN x3 1.12x.  x86-64 and AArch64 address in 64 bits
# anyway; GPUs keep the narrowing (their 32-bit index math is cheaper).
CPU_DISABLED_PASSES = ("tirx.NarrowDataType",)


# On GPUs the tensor-core kernel's cp.async pipelines (software_pipeline_async_stages) lower
# to cp.async only under this config; other kernels are unaffected.
GPU_CONFIG = {"tirx.use_async_copy": True}


def kernel_context(target: TargetLike) -> tvm.transform.PassContext:
    """The current ``PassContext`` with :data:`GPU_CONFIG` on GPU targets: build scheduled
    PrimFuncs (tuning candidates) in it to lower them as :func:`build` does."""
    return _current_context_with(config=GPU_CONFIG if _is_gpu(resolve_target(target)) else {})


def lowering_context(target: TargetLike, decompose: bool = True) -> tvm.transform.PassContext:
    """The current ``PassContext`` with :data:`CPU_DISABLED_PASSES` added on CPU targets and
    :data:`GPU_CONFIG` on GPU targets (``decompose=False``, TVM's default lowering, keeps it as
    it is): wrap ``tvm.compile(mod, target, relax_pipeline=tvm_deconv.pipeline(target))`` in
    it."""
    if not decompose:
        return _current_context_with()
    if _is_gpu(resolve_target(target)):
        return _current_context_with(config=GPU_CONFIG)
    return _current_context_with(disabled=CPU_DISABLED_PASSES)


def _current_context_with(disabled=(), config=None) -> tvm.transform.PassContext:
    """A copy of the current ``PassContext`` with passes ``disabled`` and ``config`` added."""
    current = tvm.transform.PassContext.current()
    off = list(current.disabled_pass)
    settings = dict(current.config)
    settings.update(config or {})
    return tvm.transform.PassContext(opt_level=current.opt_level,
                                     required_pass=list(current.required_pass),
                                     disabled_pass=off + [p for p in disabled if p not in off],
                                     instruments=current.instruments, config=settings)


def bind_params(mod: tvm.IRModule, params: Optional[dict]) -> tvm.IRModule:
    """``params`` (name → array or tensor) bound as constants of ``main``."""
    if not params:
        return mod
    return relax.transform.BindParams("main", {
        k: v if isinstance(v, tvm.runtime.Tensor) else tvm.runtime.tensor(np.asarray(v))
        for k, v in params.items()})(mod)
