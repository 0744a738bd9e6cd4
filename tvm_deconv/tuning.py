"""Tuning the decomposed transposed convs with MetaSchedule, and using the results at build.

Tasks are the *conv-only* PrimFuncs of a model's transposed convs (one per distinct spec and
design space); fused epilogues are not part of a task.  Three design spaces:

* ``"default"``: the target implementation's compute under its default schedule (one point,
  measured once, so the build can keep it where it beats every tuned candidate);
* ``"ours"``: the implementation's sampled design space (``space_compute`` under ``space``,
  e.g. :mod:`tvm_deconv.schedules.x86_space`: register tiles, unroll, loop order; for
  ``cuda.direct`` a knob over whole kernels, which :func:`realized` writes out before each
  build); tasks of implementations without one are not created;
* ``"stock"``: MetaSchedule's post-order-apply rules on the canonical compute in its
  ``phase_buffers`` form (the only form TIR's reduction primitives accept); for float16 on
  CUDA where the tensor-core kernel takes the shape, its tensor-core tiling
  (:func:`_stock_tensor_core_rules`) on that kernel's GEMM form
  (:func:`~tvm_deconv.schedules.cuda_tensorcore.tensor_core_conv_transpose`, the input read
  as given), so the search covers warp and block tiles beyond the hand schedule's.

Every candidate that would become a task's best record is first run on random inputs
against the float64 reference; a wrong one is reported and never stored (MetaSchedule does
not check numerics).  Records go to a MetaSchedule JSON database (``work_dir``), appended as
they are measured: Ctrl-C keeps them, and re-running continues where it stopped.

At build, :func:`load_tuning_logs` validates a database (a corrupt line is an error naming the
file and line; records for another target are ignored with a warning), and
:class:`~tvm_deconv.transform.DecomposeTransposedConv` uses the best record of each call's
workload.  Workloads are compared structurally, so a changed compute never picks up a stale
schedule.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from . import strategy
from .build import kernel_context
from .compute import decomposed_conv_transpose, decomposed_pack
from .plan import ConvTransposeSpec, make_plan
from .schedules import cuda_direct, cuda_tensorcore
from .targets import TargetLike, resolve_target
from .testing import (conv_transpose_reference, random_inputs, relative_error, run_pack,
                      tolerance)

logger = logging.getLogger("tvm_deconv")

DEFAULT, OURS, STOCK = "default", "ours", "stock"
SPACE_ATTR = "tvm_deconv.tuning_space"
SPACES = (DEFAULT, OURS, STOCK)
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
# Shipped logs are xz-compressed: a workload is its whole IRModule (~300 KB of JSON each).
COMPRESSED = ".xz"
# Rest-of-model records (MetaSchedule's own space on the PrimFuncs the plugin does not
# schedule) live in this subfolder of a work_dir: the build applies them after ours.
REST_DIR = "rest_of_model"
REST = "rest"
POPULATION_PHASE_BUDGET = 4096  # evolutionary population x phases (see _search_strategy)
MIN_POPULATION = 64
# The end of a tuning run re-times each task's best records side by side (retime_records).
RETIMED_TOP = 3
RETIME_ROUNDS = 5
RETIME_MIN_MS = 50
FAILED_SECS = 1e10  # MetaSchedule's run time of a failed candidate: never a best record


class TuningLogError(ValueError):
    """A tuning database that cannot be used (the message names the file, line and fix)."""


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class TuningTask:
    """One workload to tune: a conv-only PrimFunc ``main(data, weight_or_packed, out)``."""

    name: str
    spec: ConvTransposeSpec
    space: str                       # one of SPACES
    implementation: str              # the implementation whose compute/pack it uses
    func: tirx.PrimFunc = field(compare=False)
    pack: Optional[tirx.PrimFunc] = field(default=None, compare=False)

    @property
    def mod(self) -> tvm.IRModule:
        return tvm.IRModule({"main": self.func})


def spec_label(spec: ConvTransposeSpec) -> str:
    """A short readable name for a spec: ``ct2d_512x256_k4x4_s2x2_in4x4_b1``."""
    def dims(v):
        return "x".join(str(d) for d in v)
    label = (f"ct{spec.ndim}d_{spec.in_channels}x{spec.out_channels}_k{dims(spec.kernel)}"
             f"_s{dims(spec.strides)}_in{dims(spec.in_size)}_b{spec.batch}")
    if spec.groups > 1:
        label += f"_g{spec.groups}"
    return label


def workload_func(spec: ConvTransposeSpec, space: str, target: Target
                  ) -> Optional[tuple[str, tirx.PrimFunc, Optional[tirx.PrimFunc]]]:
    """(implementation name, conv PrimFunc as tuned and as looked up at build, pack PrimFunc),
    or ``None`` for the ``ours`` space of an implementation without a sampled space and the
    ``default`` space of one without a schedule (``gpu.single_pixel``: dlight's kernel).

    The same function builds the workload when tuning and when applying records (under
    ``target``: layouts may depend on its vector width), so the structural lookup matches.
    """
    from .transform import annotate_implementation  # pylint: disable=import-outside-toplevel

    if space == STOCK:
        if stock_on_tensor_cores(spec, target):
            func = cuda_tensorcore.tensor_core_conv_transpose(spec, copy="none")
            pack = decomposed_pack(spec)
        else:
            func, pack = decomposed_conv_transpose(spec, phase_buffers=True), None
        func = annotate_implementation(func, STOCK).with_attr("global_symbol", "main")
        return STOCK, func, pack
    selection = strategy.select(strategy.CONV_TRANSPOSE, spec, target)
    impl = selection.implementation
    if impl is None:
        raise ValueError(f"no implementation for {spec_label(spec)}: {selection.reason()}")
    compute = impl.space_compute if space == OURS else impl.compute
    if compute is None or (space == DEFAULT and impl.schedule is None):
        return None  # (no schedule: the target's stock scheduling, dlight, takes the call)
    with target:
        func = annotate_implementation(compute(spec), impl.name)
        pack = impl.pack(spec) if impl.pack is not None else None
    if space == OURS and compute is impl.compute:
        # The same PrimFunc as the default space's (CUDA): mark it, so each space is its own
        # workload with its own records (trial counts, best, tune-report curves).
        func = func.with_attr(SPACE_ATTR, OURS)
    return impl.name, func.with_attr("global_symbol", "main"), pack


def transposed_conv_specs(mod: tvm.IRModule) -> list[ConvTransposeSpec]:
    """The distinct (static, supported) transposed-conv specs called in a Relax module."""
    from .transform import TRANSPOSED_CONV_OPS, spec_from_call  # pylint: disable=C0415

    specs: list[ConvTransposeSpec] = []

    def visit(expr):
        if (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
                and expr.op.name in TRANSPOSED_CONV_OPS):
            spec, _ = spec_from_call(expr)
            if spec is not None and spec not in specs:
                specs.append(spec)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return specs


def make_tasks(specs: Iterable[ConvTransposeSpec], target: TargetLike,
               spaces: Iterable[str] = SPACES) -> list[TuningTask]:
    target = resolve_target(target)
    tasks = []
    for spec in specs:
        for space in spaces:
            if space not in SPACES:
                raise ValueError(f"unknown design space {space!r}; use one of {SPACES}")
            workload = workload_func(spec, space, target)
            if workload is None:
                logger.info("tvm_deconv: %s: no %r design space for its implementation",
                            spec_label(spec), space)
                continue
            impl, func, pack = workload
            tasks.append(TuningTask(f"{spec_label(spec)}_{space}", spec, space, impl, func,
                                    pack))
    return tasks


def extract_tasks(mod: tvm.IRModule, target: TargetLike, spaces: Iterable[str] = SPACES
                  ) -> list[TuningTask]:
    """The tuning tasks of every transposed conv in a Relax module."""
    return make_tasks(transposed_conv_specs(mod), target, spaces)


def stock_on_tensor_cores(spec: ConvTransposeSpec, target: Target) -> bool:
    """Whether the stock space of ``spec`` is MetaSchedule's tensor-core one (see the module
    doc): a CUDA target and a phase-batched call the tensor-core kernel takes (ragged plans'
    GEMM per phase write one output together, which MetaSchedule's rules do not expect)."""
    return (target.kind.name == "cuda" and make_plan(spec).phase_batched
            and cuda_tensorcore.tensor_core_reason(spec, target) is None)


def register_tensor_intrinsics() -> None:
    """Register TVM's CUDA tensor intrinsics, which the tensor-core stock space's rules and
    records name (TVMScript-parses them all: 20-50 s of CPU, so only where one is needed)."""
    # pylint: disable-next=import-outside-toplevel,unused-import
    import tvm.s_tir.tensor_intrin.cuda  # noqa: F401


def _space_generator(task: TuningTask, target: Target):
    is_gpu = "gpu" in target.keys
    if task.space == STOCK and stock_on_tensor_cores(task.spec, target):
        return ms.space_generator.PostOrderApply(sch_rules=_stock_tensor_core_rules(),
                                                 postprocs="cuda-tensorcore",
                                                 mutator_probs="cuda-tensorcore")
    if task.space == STOCK:
        kind = "cuda" if is_gpu else "llvm"
        return ms.space_generator.PostOrderApply(
            sch_rules=_stock_rules(target), postprocs=ms.postproc.Postproc.create(kind),
            mutator_probs=ms.mutator.Mutator.create(kind))
    impl = strategy.get(task.implementation)
    if task.space == OURS:
        # The space samples tile sizes and MetaSchedule's auto-unroll step (block annotation
        # turned into loop pragmas by RewriteParallelVectorizeUnroll).
        return ms.space_generator.ScheduleFn(
            lambda sch: impl.space(sch, target), sch_rules=[],
            postprocs=[ms.postproc.RewriteParallelVectorizeUnroll()],
            mutator_probs={ms.mutator.MutateTileSize(): 0.8, ms.mutator.MutateUnroll(): 0.2})

    def schedule_fn(sch):
        if impl.schedule is not None:
            impl.schedule(sch, target)

    return ms.space_generator.ScheduleFn(schedule_fn, sch_rules=[], postprocs=[],
                                         mutator_probs={})


def search_population(spec: ConvTransposeSpec) -> int:
    """The evolutionary search's population for a task of ``spec``: MetaSchedule's 512,
    shrinking with the phase count.  The search replays each candidate's trace on the task,
    one block nest per phase: 1.2 s a replay on FCN-8s' 64 phases (20 ms on a 4-phase DCGAN
    layer), so the default population (512, four genetic rounds) searched for over 25 minutes
    before the first measurement."""
    phases = make_plan(spec).num_phases
    return max(MIN_POPULATION, min(512, POPULATION_PHASE_BUDGET // phases))


def _search_strategy(task: TuningTask):
    return ms.search_strategy.EvolutionarySearch(population_size=search_population(task.spec))


def _space_size(task: TuningTask) -> float:
    """How many distinct candidates a task's space has (1 for the default schedule)."""
    return 1 if task.space == DEFAULT else math.inf


def _stock_tensor_core_rules() -> list:
    """MetaSchedule's CUDA tensor-core tiling (WMMA 16x16x16, float16 in, float32
    accumulators), then its CUDA rules for the rest.  Unlike its "cuda-tensorcore" set, the
    staging buffers are static shared memory and only the accumulator tile is dynamic: in one
    scope TVM's StorageRewrite let the float32 tile reuse a float16 buffer, and the WMMA store
    failed to lower (1 of 37 valid samples of that set built, on two layers;
    :mod:`~tvm_deconv.schedules.wmma_intrin` has the same workaround).  No software
    pipelining: with it a third of the small layer's valid samples failed to build and none of
    30 samples of pose 256->256 passed the postprocessors (the "ours" space has pipelined
    designs)."""
    from tvm.s_tir.tensor_intrin.cuda import (  # pylint: disable=import-outside-toplevel
        get_wmma_intrin_group)

    rule = ms.schedule_rule
    group = get_wmma_intrin_group("shared", "shared.dyn", "float16", "float32", trans_b=False)
    tiling = rule.MultiLevelTilingTensorCore(
        intrin_groups=[group], structure="SSSRRSRS",
        tile_binds=["blockIdx.y", "blockIdx.x", "threadIdx.y"], max_innermost_factor=4,
        vector_load_lens=[1, 2, 3, 4, 8, 16],
        reuse_read=rule.ReuseType(req="must", levels=[4], scope="shared"),
        reuse_write=rule.ReuseType(req="must", levels=[2], scope="shared.dyn"))
    return [tiling] + list(rule.ScheduleRule.create("cuda"))[1:]  # [0]: its own tiling


def _stock_rules(target: Target) -> list:
    """MetaSchedule's default rules, without write-cache reuse: a phase's output tile is
    strided, and cache_write's write-back covers its bounding box (other phases' elements)."""
    rule = ms.schedule_rule
    if "gpu" in target.keys:
        return [
            rule.MultiLevelTiling(
                structure="SSSRRSRS", tile_binds=["blockIdx.x", "vthread.x", "threadIdx.x"],
                max_innermost_factor=64, vector_load_lens=[1, 2, 3, 4, 8, 16],
                reuse_read=rule.ReuseType(req="must", levels=[4], scope="shared")),
            rule.AutoBind(),
            rule.ParallelizeVectorizeUnroll(max_jobs_per_core=-1, max_vectorize_extent=-1,
                                            unroll_max_steps=[0, 16, 64, 512, 1024],
                                            unroll_explicit=True),
        ]
    return [
        rule.MultiLevelTiling(structure="SSRSRS", max_innermost_factor=64),
        rule.ParallelizeVectorizeUnroll(max_jobs_per_core=16, max_vectorize_extent=64,
                                        unroll_max_steps=[0, 16, 64, 512],
                                        unroll_explicit=True),
        rule.RandomComputeLocation(),
    ]


# ---------------------------------------------------------------------------------------------
# Verification of candidates


class Verifier:
    """Runs a candidate schedule of a task on random inputs against the float64 reference,
    here or, given a :class:`~tvm_deconv.rpc.Board`, on the board through an RPC session
    (the reference is always computed here)."""

    def __init__(self, task: TuningTask, target: Target, seed: int = 0, board=None):
        self.task, self.target, self.board = task, target, board
        self.dev = _device(target)
        if board is None and not self.dev.exist:
            raise RuntimeError(
                f"cannot verify tuned kernels for {target.kind.name}: no such device here. "
                "Tune on a machine with the device, or pass verify=False (--no-verify) to "
                "store unverified records at your own risk")
        spec = task.spec
        self.data, weight = random_inputs(spec, seed)
        self.ref = conv_transpose_reference(self.data, weight, spec)
        self.weight = weight
        if task.pack is not None:
            self.weight = run_pack(task.pack, weight, _host(target))

    @property
    def tolerance(self) -> float:
        return tolerance(self.task.spec.out_dtype)

    def error(self, sch, lib=None) -> float:
        """Relative error of the scheduled workload (``inf`` if it fails to build or run),
        given its built ``lib`` or built here; :class:`~tvm_deconv.rpc.BoardLost` when the
        board is gone."""
        from .rpc import BoardLost  # pylint: disable=import-outside-toplevel

        try:
            if lib is None:
                with kernel_context(self.target):
                    lib = tvm.compile(realized(sch.mod), self.target)
            return relative_error(self._run(lib), self.ref)
        except BoardLost:
            raise
        except Exception as err:  # pylint: disable=broad-except
            if self.board is not None and (problem := self.board.problem()) is not None:
                raise BoardLost(f"{self.board}: {problem}") from err
            logger.warning("tvm_deconv: verifying a candidate of %s failed: %s",
                           self.task.name, err)
            return float("inf")

    def _run(self, lib) -> np.ndarray:
        """The workload's output on the random inputs, here or on the board."""
        spec, dev = self.task.spec, self.dev
        if self.board is not None:
            session, lib = self.board.load(lib)
            dev = session.cuda(0) if "gpu" in self.target.keys else session.cpu(0)
        out = tvm.runtime.tensor(np.zeros(spec.out_shape, spec.out_dtype), dev)
        lib["main"](tvm.runtime.tensor(self.data, dev), tvm.runtime.tensor(self.weight, dev), out)
        dev.sync()
        return out.numpy()


def _device(target: Target):
    return tvm.cuda(0) if "gpu" in target.keys else tvm.cpu(0)


def _host(target: Target) -> Target:
    return target.host if target.host is not None else resolve_target("llvm")


@derived_object
class VerifiedCommit(ms.measure_callback.PyMeasureCallback):
    """Commit measured candidates to the database; one that would become the best record is
    checked against the reference first, and dropped (and counted) if it is wrong.

    With a ``board``: a failed run is followed by a health check; a board that stays gone
    (:meth:`~tvm_deconv.rpc.Board.wait_until_up`) sets ``board_error``, and once the batch's
    records are committed ``apply`` raises to end the tuning run; candidates that would need
    the board to be verified are dropped."""

    def __init__(self, database, task: TuningTask, target: Target, verifier: Optional[Verifier],
                 progress=None, best_secs: float = math.inf, board=None):
        self.database, self.task, self.target = database, task, target
        self.verifier, self.progress, self.board = verifier, progress, board
        self.workload = database.commit_workload(task.mod)
        self.best_secs = best_secs
        self.rejected = 0
        self.measured = 0
        self.board_error: Optional[str] = None

    def _check_board(self, runner_error: Optional[str]) -> None:
        if self.board is None or self.board_error is not None:
            return
        problem = self.board.wait_until_up()
        if problem is not None:
            last = (runner_error or "no result").strip().splitlines()[-1]
            self.board_error = f"{self.board} failed: {problem} (last runner error: {last})"
            logger.error("tvm_deconv: %s: %s", self.task.name, self.board_error)

    def _verify(self, sch) -> Optional[float]:
        """The candidate's relative error; None when the board is gone."""
        from .rpc import BoardLost  # pylint: disable=import-outside-toplevel

        if self.board_error is not None:
            return None
        try:
            return self.verifier.error(sch)
        except BoardLost as lost:  # dropped unverified, whether or not the board comes back
            self._check_board(str(lost))
            return None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results) -> None:
        for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
            self.measured += 1
            if built.error_msg:
                continue
            if ran.error_msg or not ran.run_secs:
                self._check_board(ran.error_msg)
                continue
            secs = [float(s) for s in ran.run_secs]
            mean = _mean(secs)
            if mean < self.best_secs and self.verifier is not None:
                err = self._verify(cand.sch)
                if err is None:
                    continue
                if not err < self.verifier.tolerance:
                    self.rejected += 1
                    logger.warning("tvm_deconv: %s: discarded a candidate measuring %.3f ms: "
                                   "wrong result (relative error %.2e)", self.task.name,
                                   mean * 1e3, err)
                    continue
            self.best_secs = min(self.best_secs, mean)
            self.database.commit_tuning_record(ms.database.TuningRecord(
                cand.sch.trace, self.workload, secs, self.target, cand.args_info))
        if self.progress is not None:
            self.progress.update(len(measure_candidates))
            if math.isfinite(self.best_secs):
                self.progress.set_postfix(best_ms=f"{self.best_secs * 1e3:.3f}",
                                          rejected=self.rejected)
        if self.board_error is not None:  # ends the task (terminate_task here fails a check)
            raise RuntimeError(self.board_error)


# ---------------------------------------------------------------------------------------------
# Tuning


@dataclass
class TaskResult:
    task: str
    space: str
    implementation: str
    trials_before: int
    trials_run: int
    best_ms: Optional[float]
    rejected: int
    gflops: Optional[float] = None


def _mean(secs) -> float:
    """Mean seconds of a record's ``run_secs`` (how MetaSchedule ranks records)."""
    return sum(float(s) for s in secs) / len(secs)


def top_records(database, mod: tvm.IRModule, top: Optional[int] = None) -> list:
    """The measured records of ``mod``'s workload in ``database`` (records on the database's
    own workload object: :func:`open_database`, :func:`load_tuning_logs`), fastest first,
    failed ones left out.  MetaSchedule's ``get_top_k``, but that in TVM 0.27 also leaves out
    every record whose trace has no scheduling instruction, i.e. the default-space records of
    kernels scheduled in their compute (``x86.phase_tile``): their tuning runs measured the
    default again each time, and the build, seeing no default record, kept the default over
    every tuned one."""
    workload = database.commit_workload(mod)
    measured = [r for r in database.get_all_tuning_records()
                if r.workload.same_as(workload) and _mean(r.run_secs) < FAILED_SECS]
    return sorted(measured, key=lambda r: _mean(r.run_secs))[:top]


def open_database(work_dir: str | os.PathLike):
    """The JSON database in ``work_dir`` (created if missing, validated if present)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    validate_log_files(work_dir)
    return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")


def realized(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with each PrimFunc as it is built: a ``cuda.direct`` space workload becomes the
    kernel of the tile its trace chose (:func:`~.schedules.cuda_direct.realize_tile`), the
    others stay.  Every build of a candidate or a record goes through it."""
    funcs = {gv: cuda_direct.realize_tile(func) if isinstance(func, tirx.PrimFunc) else func
             for gv, func in mod.functions_items()}
    if all(funcs[gv].same_as(func) for gv, func in mod.functions_items()):
        return mod
    return tvm.IRModule(funcs, attrs=mod.attrs)


def build_candidate(mod: tvm.IRModule, target: Target, _params=None):
    """MetaSchedule's default candidate build without its import of every tensor intrinsic
    (``tvm.s_tir.tensor_intrin`` TVMScript-parses them all), which these kernels never use:
    that import costs each fresh build worker (one per batch) 20-76 s CPU, minutes on a loaded
    2-core machine, where it outlasted the build timeout and every trial failed.  Built in
    :func:`~.build.kernel_context` (on GPUs: cp.async as in tvm_deconv.build)."""
    from tvm.driver import build as tvm_build  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import (  # pylint: disable=import-outside-toplevel
        RemoveWeightLayoutRewriteBlock)

    with kernel_context(target):
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(realized(mod))
        return tvm_build(mod, target=target)


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's local build (``f_build``, then its default export, in worker processes)
    with one worker pool for all its batches.  LocalBuilder starts a fresh pool per batch, and
    a fresh worker first imports TVM, plus every tensor intrinsic under TVM's default build:
    29 s for a one-candidate batch on the H100 machine (session 29), where the bench process
    builds a whole layer in 1-3 s.  Workers are recycled after ``uses_per_worker`` builds
    (the leak LocalBuilder avoids by its fresh pools); :meth:`close` stops them.

    ``f_build`` None is TVM's default build, as LocalBuilder's; ``f_export`` as LocalBuilder's
    (None: its ``.tar``; boards: a ``.so`` to upload, :meth:`~tvm_deconv.rpc.Board.builder`).
    The 120 s default timeout suits 2-core hosts (MetaSchedule's 30 s does not).  In: a batch
    of ``BuilderInput``; out: one ``BuilderResult`` each (an artifact path, or the error)."""

    def __init__(self, f_build=build_candidate, timeout_sec: float = 120,
                 max_workers: Optional[int] = None, uses_per_worker: int = 64, f_export=None):
        super().__init__()
        self.f_build, self.f_export, self.timeout_sec = f_build, f_export, timeout_sec
        self.max_workers, self.uses_per_worker = max_workers, uses_per_worker
        self._pool = None

    def build(self, build_inputs):
        from tvm.s_tir.meta_schedule.builder.local_builder import (  # pylint: disable=C0415
            _serialize_params, _worker_func)
        from tvm.s_tir.meta_schedule.utils import cpu_count  # pylint: disable=C0415
        from tvm.support.popen_pool import (  # pylint: disable=import-outside-toplevel
            PopenPoolExecutor, StatusKind)

        if self._pool is None:
            self._pool = PopenPoolExecutor(max_workers=self.max_workers or cpu_count(),
                                           timeout=self.timeout_sec,
                                           maximum_process_uses=self.uses_per_worker)
        results = []
        for done in self._pool.map_with_error_catching(
                lambda args: _worker_func(*args),
                [(self.f_build, self.f_export, i.mod, i.target, _serialize_params(i.params))
                 for i in build_inputs]):
            if done.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(done.value, None))
            elif done.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"PooledBuilder: timeout, killed after {self.timeout_sec} s"))
            else:
                results.append(ms.builder.BuilderResult(
                    None, f"PooledBuilder: an exception occurred\n{done.value}"))
        return results

    def close(self) -> None:
        """Stop the workers (a later build starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def tune(
    mod_or_tasks,
    target: TargetLike,
    work_dir: str | os.PathLike,
    trials: int = 64,
    spaces: Iterable[str] = SPACES,
    runner="local",
    builder=None,
    cost_model: str = "xgb",
    verify: bool = True,
    progress: bool = True,
    seed: Optional[int] = None,
    board=None,
    rest_of_model: bool = False,
    params: Optional[dict] = None,
    retime: Optional[bool] = None,
) -> list[TaskResult]:
    """Tune the transposed convs of a Relax module (or a list of :class:`TuningTask`).

    ``trials`` is per task (a space without knobs is measured once); tasks already holding
    records in ``work_dir`` only run the remaining trials (re-running the same command
    resumes).  Returns one row per task.

    ``rest_of_model`` (a module only): then also tune, ``trials`` each, the fused PrimFuncs
    the plugin does not schedule (batch norms, concatenations, activations that did not fuse
    into a conv), lowered as :func:`tvm_deconv.build` lowers them with this tuning's records
    and ``params`` bound, in MetaSchedule's stock space; records go to
    ``work_dir/rest_of_model/``, which the build applies after ours.  Their would-be best
    candidates are checked against the untuned PrimFunc on random inputs.

    ``retime`` (default: on for CPUs tuned here, with ``verify``): end with
    :func:`retime_records`, so the build compares the spaces' best records by times taken
    side by side (the rows report those).  GPUs and boards keep the times measured at
    tuning: a GPU's are not shared-machine noise.

    ``board`` (:class:`tvm_deconv.rpc.Board`): measure and verify on that board over RPC
    (its runner and builder by default).  A board that is gone, or drops out and does not
    come back, raises :class:`~tvm_deconv.rpc.BoardLost` naming it, with the rows finished
    so far; the trials in flight are lost, the records measured before stay.
    """
    from .rpc import BoardLost  # pylint: disable=import-outside-toplevel

    target = resolve_target(target)
    is_module = isinstance(mod_or_tasks, tvm.IRModule)
    if rest_of_model and not is_module:
        raise ValueError("rest_of_model=True needs the Relax module, not a list of tasks")
    if rest_of_model and board is not None:
        raise ValueError("rest_of_model=True verifies candidates on this machine's device; "
                         "tune the rest of the model without a board")
    tasks = list(mod_or_tasks) if not is_module else extract_tasks(mod_or_tasks, target, spaces)
    if not tasks and not rest_of_model:
        raise ValueError("nothing to tune: the module has no supported transposed conv")
    own_pool = builder is None
    if builder is None:
        builder = board.builder() if board else PooledBuilder()
    if runner == "local":
        runner = board.runner() if board else ms.runner.LocalRunner(timeout_sec=60)
    run = _TaskRunner(target, builder, runner, cost_model, progress, seed, board)
    try:
        database = open_database(work_dir)
        results = []
        for task in tasks:
            verifier = (lambda t=task: Verifier(t, target, seed or 0, board)) if verify else None
            try:
                before, new, best, rejected, lost = run(
                    database, work_dir, task, _space_generator(task, target),
                    _search_strategy(task), verifier, min(trials, _space_size(task)))
            except BoardLost as gone:  # (with the rows finished so far)
                raise BoardLost(str(gone), results) from None
            results.append(_with_best(
                TaskResult(task.name, task.space, task.implementation, before, new, None, rejected),
                task.spec, best * 1e3 if math.isfinite(best) else None))
            if lost is not None:
                raise BoardLost(f"{lost}; the records measured so far stay in {work_dir}: bring "
                                "the board back and run the same command to continue", results)
        if retime is None:
            retime = retimes(target, verify, board)
        if retime and tasks:
            retimed = retime_records(work_dir, tasks, target)
            results = [_with_best(row, task.spec, retimed[task.name] * 1e3)
                       if task.name in retimed else row for row, task in zip(results, tasks)]
        if rest_of_model:
            rest_dir = Path(work_dir) / REST_DIR
            rest_db = open_database(rest_dir)
            for task in rest_of_model_tasks(mod_or_tasks, target, work_dir, params):
                verifier = (lambda t=task: RestVerifier(t, target)) if verify else None
                space = ms.space_generator.PostOrderApply(
                    sch_rules="from-target", postprocs="from-target", mutator_probs="from-target")
                before, new, best, rejected, _ = run(rest_db, rest_dir, task, space,
                                                     "evolutionary", verifier, trials)
                results.append(TaskResult(task.name, REST, "metaschedule", before, new,
                                          best * 1e3 if math.isfinite(best) else None, rejected))
        return results
    finally:
        if own_pool:
            builder.close()


def _with_best(row: TaskResult, spec: ConvTransposeSpec, best_ms: Optional[float]
               ) -> TaskResult:
    """``row`` with its best time and the useful GFLOP/s of ``spec`` at that time."""
    gflops = make_plan(spec).useful_flops() / (best_ms * 1e6) if best_ms else None
    return dataclasses.replace(row, best_ms=best_ms, gflops=gflops)


@dataclass(frozen=True)
class RestTask:
    """A fused PrimFunc of a model that the plugin does not schedule (``main`` of ``mod``)."""

    name: str
    mod: tvm.IRModule


def rest_of_model_tasks(mod: tvm.IRModule, target: TargetLike, tuning_logs=None,
                        params: Optional[dict] = None) -> list[RestTask]:
    """The fused PrimFuncs of ``mod`` that :func:`tvm_deconv.build` (with ``tuning_logs``
    and ``params``) leaves unscheduled, as MetaSchedule extracts them."""
    from .build import bind_params, front_passes  # pylint: disable=import-outside-toplevel

    target = resolve_target(target)
    mod = bind_params(mod, params)
    logs = (tuning_logs if tuning_logs is not None and existing_log(tuning_logs) is not None
            else False)
    with target:
        lowered = tvm.transform.Sequential(front_passes(target, tuning_logs=logs))(mod)
    tasks = []
    for extracted in ms.relax_integration.extract_tasks(lowered, target):
        func_mod = extracted.dispatched[0]
        if not func_mod["main"].attrs.get("tirx.is_scheduled", False):
            tasks.append(RestTask(extracted.task_name, func_mod))
    return tasks


class RestVerifier:
    """Runs a candidate schedule of a :class:`RestTask` and its untuned PrimFunc on the same
    random arguments (floats normal, integers zero) and compares every argument after."""

    tolerance = 1e-5

    def __init__(self, task: RestTask, target: Target, seed: int = 0):
        self.task, self.target, self.dev = task, target, _device(target)
        rng = np.random.default_rng(seed)
        self.args = []
        for info in ms.arg_info.ArgInfo.from_prim_func(task.mod["main"]):
            shape, dtype = [int(d) for d in info.shape], str(info.dtype)
            self.args.append(rng.standard_normal(shape).astype(dtype) if "float" in dtype
                             else np.zeros(shape, dtype))
        self.ref = self._run(tvm.compile(task.mod, target))

    def _run(self, lib) -> np.ndarray:
        args = [tvm.runtime.tensor(a, self.dev) for a in self.args]
        lib["main"](*args)
        self.dev.sync()
        return np.concatenate([a.numpy().astype("float64").ravel() for a in args])

    def error(self, sch) -> float:
        try:
            return relative_error(self._run(tvm.compile(sch.mod, self.target)), self.ref)
        except Exception as err:  # pylint: disable=broad-except
            logger.warning("tvm_deconv: verifying a candidate of %s failed: %s",
                           self.task.name, err)
            return float("inf")


class _TaskRunner:
    """One task's MetaSchedule run: the remaining trials into a database, with a progress
    bar and :class:`VerifiedCommit`; returns (records before, new records, best seconds,
    rejected, board error)."""

    def __init__(self, target, builder, runner, cost_model, progress, seed, board):
        self.target, self.builder, self.runner = target, builder, runner
        self.cost_model, self.progress, self.seed, self.board = cost_model, progress, seed, board

    def __call__(self, database, work_dir, task, space_generator, search_strategy,
                 make_verifier, budget):
        from .rpc import BoardLost  # pylint: disable=import-outside-toplevel

        done = top_records(database, task.mod)
        before = len(done)
        left = budget - before
        best = min((_mean(r.run_secs) for r in done), default=math.inf)
        if left <= 0:
            return before, 0, best, 0, None
        board = self.board
        if board is not None and (problem := board.problem()) is not None:
            raise BoardLost(f"{board}: {problem}", [])
        bar = _progress_bar(task.name, left) if self.progress else None
        verifier = make_verifier() if make_verifier is not None else None
        callback = VerifiedCommit(database, task, self.target, verifier, bar, best, board)
        context = ms.TuneContext(
            mod=task.mod, target=self.target, space_generator=space_generator,
            search_strategy=search_strategy, task_name=task.name,
            rand_state=-1 if self.seed is None else self.seed, num_threads="physical",
            logger=logger)
        try:
            ms.tune_tasks(
                tasks=[context], task_weights=[1.0], work_dir=str(work_dir),
                max_trials_global=left, num_trials_per_iter=min(16, left),
                builder=self.builder, runner=self.runner, database=database,
                cost_model=self.cost_model,
                measure_callbacks=[callback, ms.measure_callback.RemoveBuildArtifact(),
                                   ms.measure_callback.UpdateCostModel()])
        except Exception:  # pylint: disable=broad-except
            if callback.board_error is None:
                raise
        finally:
            if bar is not None:
                bar.close()
        new = len(top_records(database, task.mod)) - before
        return before, new, callback.best_secs, callback.rejected, callback.board_error


def _progress_bar(name: str, total: int):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, desc=name, unit="trial", dynamic_ncols=True)


def results_table(results: list[TaskResult]) -> str:
    """A Markdown table of tuning results."""
    lines = ["| task | space | implementation | trials (new) | best ms | GFLOP/s | rejected |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        best = f"{r.best_ms:.3f}" if r.best_ms is not None else "n/a"
        gflops = f"{r.gflops:.1f}" if r.gflops is not None else "n/a"
        lines.append(f"| {r.task} | {r.space} | {r.implementation} | "
                     f"{r.trials_before + r.trials_run} ({r.trials_run}) | {best} | {gflops} | "
                     f"{r.rejected} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Using tuning logs at build


def target_key(target: Target) -> str:
    """What a record's target must share with the build target: kind, CPU/GPU model and the
    features switched on or off beyond the model's (``llvm-znver4-mattr-avx512f`` for a Zen 4
    whose AVX-512 is hidden)."""
    exported = target.export()
    parts = [target.kind.name]
    for attr in ("mtriple", "mcpu", "arch"):
        value = exported.get(attr)
        if value and not (attr == "mtriple" and target.kind.name != "llvm"):
            parts.append(str(value).split("-")[0] if attr == "mtriple" else str(value))
    if exported.get("mattr"):
        parts.append("mattr" + "".join(sorted(str(f) for f in exported["mattr"])))
    return "-".join(parts)


def shipped_logs_root() -> Optional[Path]:
    """The folder of the tuning logs shipped with the package (one subfolder per
    :func:`target_key`); ``None`` in a source tree used without installing it."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    found = importlib.util.find_spec("tvm_deconv.tuning_logs")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def shipped_log_dir(target: Target) -> Optional[Path]:
    """The tuning log shipped with the package for this target, if any."""
    root = shipped_logs_root()
    if root is None:
        return None
    return existing_log(root / target_key(target))


def existing_log(path: str | os.PathLike) -> Optional[Path]:
    """``path`` if it holds a tuning log (plain or compressed), else ``None``."""
    path = Path(path)
    return path if _log_files_in(path) is not None else None


def _log_files_in(path: Path) -> Optional[str]:
    """'' if ``path`` holds a JSON database, :data:`COMPRESSED` if an xz-compressed one."""
    for suffix in ("", COMPRESSED):
        if (path / (RECORD_FILE + suffix)).exists() and (path / (WORKLOAD_FILE + suffix)).exists():
            return suffix
    return None


def _readable_copy(path: Path) -> Path:
    """``path`` itself, or for a compressed log a temporary folder with it decompressed."""
    import tempfile  # pylint: disable=import-outside-toplevel

    if _log_files_in(path) != COMPRESSED:
        return path
    copy = Path(tempfile.mkdtemp(prefix="tvm_deconv_log_"))
    _decompress_log(path, into=copy)
    return copy


def _decompress_log(path: Path, into: Optional[Path] = None) -> None:
    """The inverse of :func:`compress_log`: in place, or into another folder."""
    import lzma  # pylint: disable=import-outside-toplevel

    for name in (WORKLOAD_FILE, RECORD_FILE):
        packed = path / (name + COMPRESSED)
        ((into or path) / name).write_bytes(lzma.decompress(packed.read_bytes()))
        if into is None:
            packed.unlink()


def compress_log(path: str | os.PathLike) -> None:
    """Replace the JSON database in ``path`` by its xz-compressed files (how shipped logs
    are stored; :func:`load_tuning_logs` reads both)."""
    import lzma  # pylint: disable=import-outside-toplevel

    path = Path(path)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        (path / (name + COMPRESSED)).write_bytes(
            lzma.compress((path / name).read_bytes(), preset=9))
        (path / name).unlink()


def validate_log_files(work_dir: Path) -> None:
    """Raise :class:`TuningLogError` naming the file and line of the first malformed entry."""
    workloads = work_dir / WORKLOAD_FILE
    records = work_dir / RECORD_FILE
    count = 0
    fix = "delete that line (or the file) and re-run `tvm-deconv tune`"
    if workloads.exists():
        for lineno, line in _lines(workloads):
            entry = _json(workloads, lineno, line, fix)
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)):
                raise TuningLogError(f"{workloads}:{lineno}: not a MetaSchedule workload entry "
                                     f"([hash, module json]); {fix}")
            count += 1
    if records.exists():
        for lineno, line in _lines(records):
            entry = _json(records, lineno, line, fix)
            ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
                  and isinstance(entry[1], list) and len(entry[1]) >= 2)
            if not ok:
                raise TuningLogError(f"{records}:{lineno}: not a MetaSchedule tuning record "
                                     f"([workload index, [trace, run_secs, target, args]]); "
                                     f"{fix}")
            if not 0 <= entry[0] < count:
                raise TuningLogError(f"{records}:{lineno}: refers to workload {entry[0]} but "
                                     f"{workloads} has {count}; the two files do not belong "
                                     f"together: {fix}")


def _lines(path: Path):
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if line.strip():
                yield lineno, line


def _json(path: Path, lineno: int, line: str, fix: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise TuningLogError(f"{path}:{lineno}: corrupt JSON ({err.msg}); {fix}") from None


def load_tuning_logs(path: str | os.PathLike, target: Target):
    """A database of the records in ``path`` that were measured on ``target``'s kind of device.

    Records for other targets are dropped with one warning per file.
    """
    path = Path(path)
    if _log_files_in(path) is None:
        raise TuningLogError(f"{path} is not a tuning log: it needs {WORKLOAD_FILE} and "
                             f"{RECORD_FILE} (the work_dir of `tvm-deconv tune`)")
    records = read_log_records(path)
    wanted = target_key(target)
    database = ms.database.MemoryDatabase(module_equality="structural")
    foreign = set()
    for record in records:
        key = target_key(record.target) if record.target is not None else "?"
        if key != wanted:
            foreign.add(key)
            continue
        database.commit_tuning_record(ms.database.TuningRecord(  # (on the database's workload)
            record.trace, database.commit_workload(record.workload.mod), record.run_secs,
            record.target, record.args_info))
    if foreign:
        logger.warning("tvm_deconv: %s: ignored records tuned for %s (building for %s)", path,
                       ", ".join(sorted(foreign)), wanted)
    return database


def read_log_records(path: str | os.PathLike) -> list:
    """Every record of the log in ``path``, plain or xz-compressed (a temporary decompressed
    copy is removed again); errors name the file and line."""
    path = Path(path)
    readable = _readable_copy(path)
    try:
        return _read_records(readable)
    except TuningLogError as err:
        raise TuningLogError(str(err).replace(str(readable), f"{path} (decompressed)")) from None
    finally:
        if readable != path:
            shutil.rmtree(readable, ignore_errors=True)


def _read_records(path: Path) -> list:
    validate_log_files(path)
    try:
        source = ms.database.JSONDatabase(work_dir=str(path), module_equality="structural")
        return list(source.get_all_tuning_records())
    except Exception as err:  # pylint: disable=broad-except
        raise TuningLogError(f"{path}: MetaSchedule could not read the log ({err}); delete it "
                             "and re-run `tvm-deconv tune`") from None


def best_schedule(database, task_mod: tvm.IRModule, target: Target):
    """(schedule, seconds) of the best record for a workload, or ``None``."""
    records = top_records(database, task_mod, 1)
    if not records:
        return None
    record = records[0]
    if any(inst.kind.name == "Tensorize" for inst in record.trace.insts):
        register_tensor_intrinsics()  # the tensor-core stock space's records name them
    sch = tvm.s_tir.Schedule(task_mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch, _mean(record.run_secs)


# ---------------------------------------------------------------------------------------------
# Tuning cost: trials a design space needs


@dataclass
class TuningCurve:
    """A task's best latency after each stored record, in measurement order (the database
    appends records as they are measured; failed builds/runs and rejected candidates are not
    stored, so they do not count as trials here)."""

    task: str
    space: str
    spec: str
    flops: int
    best_ms: list[float]

    @property
    def final_ms(self) -> float:
        return self.best_ms[-1]

    def trials_to(self, fraction: float = 0.9) -> int:
        """Trials until the best reached ``fraction`` of the final best speed."""
        limit = self.final_ms / fraction
        return next(i + 1 for i, ms_ in enumerate(self.best_ms) if ms_ <= limit)


def tuning_curves(work_dir: str | os.PathLike, tasks: Iterable[TuningTask]
                  ) -> list[TuningCurve]:
    """The :class:`TuningCurve` of each task holding records in the database ``work_dir``."""
    work_dir = Path(work_dir)
    if not (work_dir / RECORD_FILE).exists():
        raise TuningLogError(f"{work_dir} is not a tuning log: it has no {RECORD_FILE}")
    validate_log_files(work_dir)
    hashes = [json.loads(line)[0] for _, line in _lines(work_dir / WORKLOAD_FILE)]
    secs_by_workload: dict[int, list[float]] = {}
    for _, line in _lines(work_dir / RECORD_FILE):
        index, (_, run_secs, *_) = json.loads(line)
        secs_by_workload.setdefault(index, []).append(_mean(run_secs))
    curves = []
    for task in tasks:
        key = _workload_key(task.mod)
        secs = [s for i, h in enumerate(hashes) if h == key for s in secs_by_workload.get(i, [])]
        if secs:
            best = np.minimum.accumulate(np.array(secs) * 1e3)
            curves.append(TuningCurve(task.name, task.space, spec_label(task.spec),
                                      make_plan(task.spec).useful_flops(),
                                      [float(b) for b in best]))
    return curves


def cost_report(curves: list[TuningCurve], fraction: float = 0.9) -> list[dict]:
    """One row per spec: per space the trials, best latency and trials to ``fraction`` of it."""
    rows: dict[str, dict] = {}
    for curve in curves:
        row = rows.setdefault(curve.spec, {"spec": curve.spec})
        row[curve.space] = {"trials": len(curve.best_ms), "best_ms": curve.final_ms,
                            "gflops": curve.flops / (curve.final_ms * 1e6),
                            f"trials_to_{round(fraction * 100)}pct": curve.trials_to(fraction),
                            "curve_ms": curve.best_ms}
    for row in rows.values():
        timed = {s: row[s]["best_ms"] for s in SPACES if s in row}
        row["fastest"] = min(timed, key=timed.get)
    return list(rows.values())


def cost_report_table(rows: list[dict], fraction: float = 0.9) -> str:
    """A Markdown table of :func:`cost_report` rows."""
    key = f"trials_to_{round(fraction * 100)}pct"
    pct = round(fraction * 100)
    lines = [f"| layer | default ms | ours best ms | ours trials | ours trials to {pct}% | "
             f"stock best ms | stock trials | stock trials to {pct}% | fastest |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(row, space, field_):
        value = row.get(space, {}).get(field_)
        return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    for row in rows:
        lines.append(f"| {row['spec']} | {cell(row, DEFAULT, 'best_ms')} | "
                     f"{cell(row, OURS, 'best_ms')} | {cell(row, OURS, 'trials')} | "
                     f"{cell(row, OURS, key)} | {cell(row, STOCK, 'best_ms')} | "
                     f"{cell(row, STOCK, 'trials')} | {cell(row, STOCK, key)} | "
                     f"{row['fastest']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Shipping logs


def _checked_timer(task: TuningTask, record, verifier: "Verifier", target: Target
                   ) -> Optional[Callable[[], float]]:
    """A stored record's kernel built here: a function timing one run of it (seconds, at
    least :data:`RETIME_MIN_MS` of calls averaged) on the verifier's random inputs, or
    ``None`` (with a warning) if it fails to build or its output is wrong."""
    sch = tvm.s_tir.Schedule(task.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    try:
        lib = tvm.compile(realized(sch.mod), target)
    except Exception as exc:  # pylint: disable=broad-except
        logger.warning("tvm_deconv: %s: a stored record fails to build: %s", task.name, exc)
        return None
    err = verifier.error(sch, lib)
    if not err < tolerance(task.spec.out_dtype):
        logger.warning("tvm_deconv: %s: a stored record is wrong (relative error %.2e)",
                       task.name, err)
        return None
    dev = verifier.dev
    args = [tvm.runtime.tensor(verifier.data, dev), tvm.runtime.tensor(verifier.weight, dev),
            tvm.runtime.tensor(np.zeros(task.spec.out_shape, task.spec.out_dtype), dev)]
    evaluator = lib.jit().time_evaluator("main", dev, number=1, repeat=1,
                                         min_repeat_ms=RETIME_MIN_MS)
    return lambda: float(evaluator(*args).results[0])


def _round_robin_secs(timers: list, rounds: int) -> list[list[float]]:
    """Seconds per timer, one run of each per round, so that load from other jobs on a shared
    machine falls on all of them alike."""
    samples: list[list[float]] = [[] for _ in timers]
    for _ in range(rounds):
        for timer, secs in zip(timers, samples):
            secs.append(timer())
    return samples


def _workload_key(mod: tvm.IRModule) -> str:
    """A workload's hash as MetaSchedule's JSON database stores it."""
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    return str(tvm_ffi.structural_hash(mod) % (1 << 64))


def retimes(target: Target, verify: bool = True, board=None) -> bool:
    """Whether a tuning run ends with :func:`retime_records` by default: CPUs measured here,
    with verification (GPUs' and boards' times are kept as measured at tuning)."""
    return verify and board is None and "gpu" not in target.keys


def retime_records(work_dir: str | os.PathLike, tasks: Iterable[TuningTask],
                   target: TargetLike, top: int = RETIMED_TOP, rounds: int = RETIME_ROUNDS
                   ) -> dict[str, float]:
    """Re-time the ``top`` fastest records of each task in the database ``work_dir`` and store
    those times in place of the ones measured while tuning.  The records of all spaces of one
    spec (the default schedule's among them) run round-robin, :data:`RETIME_ROUNDS` rounds
    after one another, and each keeps the median: while tuning, each was timed alone at
    another moment, and on a shared machine a candidate's lucky time beat the default
    schedule it lost to side by side (so the build picked a slower kernel than untuned).
    Each is verified against the float64 reference first; a wrong one (MetaSchedule stores
    the candidates that would not become best without a check) is stored as failed, so the
    build never picks it.  Returns the best re-timed seconds per task name."""
    target = resolve_target(target)
    work_dir = Path(work_dir)
    database = open_database(work_dir)
    record_file = work_dir / RECORD_FILE
    if not record_file.exists():
        return {}
    hashes = [json.loads(line)[0] for _, line in _lines(work_dir / WORKLOAD_FILE)]
    entries = [json.loads(line) for _, line in _lines(record_file)]
    by_spec: dict[ConvTransposeSpec, list[TuningTask]] = {}
    for task in tasks:
        by_spec.setdefault(task.spec, []).append(task)
    best: dict[str, float] = {}
    for spec_tasks in by_spec.values():
        rows, timers, owners = [], [], []
        for task in spec_tasks:
            key = _workload_key(task.mod)
            mine = sorted((i for i, (w, _) in enumerate(entries) if hashes[w] == key),
                          key=lambda i: _mean(entries[i][1][1]))[:top]
            if not mine:
                continue
            verifier, workload = Verifier(task, target), database.commit_workload(task.mod)
            for i in mine:
                record = ms.database.TuningRecord.from_json(entries[i][1], workload)
                timer = _checked_timer(task, record, verifier, target)
                if timer is None:
                    entries[i][1][1] = [FAILED_SECS]
                    continue
                rows.append(i)
                timers.append(timer)
                owners.append(task.name)
        for i, secs, owner in zip(rows, _round_robin_secs(timers, rounds), owners):
            entries[i][1][1] = [float(np.median(secs))]
            best[owner] = min(best.get(owner, math.inf), entries[i][1][1][0])
    scratch = record_file.with_suffix(".retimed")
    scratch.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    os.replace(scratch, record_file)
    return best


def export_logs(work_dir: str | os.PathLike, out_dir: str | os.PathLike,
                tasks: Iterable[TuningTask], target: TargetLike, top: int = 3,
                repeat: int = 5, compress: bool = False, remeasure: bool = True
                ) -> list[tuple[str, int]]:
    """Copy the ``top`` fastest records of each task measured on ``target`` from ``work_dir``
    to the database ``out_dir`` (e.g. ``tuning_logs/<target_key>/``; records already there
    are kept, so several runs merge into one folder), each re-verified against the float64
    reference and re-timed here, on the target's device, ``repeat`` round-robin rounds
    (:func:`_round_robin_secs`), so records measured at different times on a shared machine
    compare fairly at build.  ``remeasure=False`` copies the records as they were measured
    at tuning, with no device here (GPU logs: a GPU's timings are not shared-machine noise,
    and every best record was verified when it was measured).  ``compress``: store ``out_dir``
    xz-compressed, as shipped logs are (a compressed ``out_dir`` is read back first).
    Returns (task, records kept) per task."""
    target = resolve_target(target)
    source = load_tuning_logs(work_dir, target)
    out_dir = Path(out_dir)
    if _log_files_in(out_dir) == COMPRESSED:
        _decompress_log(out_dir)
    out = open_database(out_dir)
    kept = []
    for task in tasks:
        records = top_records(source, task.mod, top)
        timed = [(r, r.run_secs) for r in records]
        if remeasure and records:
            verifier = Verifier(task, target)
            checked = [(r, _checked_timer(task, r, verifier, target)) for r in records]
            checked = [(r, timer) for r, timer in checked if timer is not None]
            timed = list(zip([r for r, _ in checked],
                             _round_robin_secs([timer for _, timer in checked], repeat)))
        for record, secs in timed:
            out.commit_tuning_record(ms.database.TuningRecord(
                record.trace, out.commit_workload(task.mod), secs, target, record.args_info))
        kept.append((task.name, len(timed)))
    if compress:
        compress_log(out_dir)
    return kept
