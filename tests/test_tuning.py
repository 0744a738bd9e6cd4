"""Tuning: verified records, resumable databases, logs applied at build, log hygiene."""

import logging
import os

import numpy as np
import psutil
import pytest
import tvm
import tvm_ffi
from tvm import relax, s_tir
from tvm.s_tir import meta_schedule as ms

import tvm_deconv
from tvm_deconv import strategy, tuning
from tvm_deconv.plan import make_spec
from tvm_deconv.schedules import cuda_wgmma
from tvm_deconv.testing import (conv_transpose_reference, nvcc_errors, random_inputs,
                                relative_error, transposed_conv_module)

SPEC = make_spec((1, 4, 4, 4), (4, 2, 4, 4), strides=2, padding=1)


def one_layer(spec, weight):
    return transposed_conv_module(spec, weight)


def write_record(work_dir, spec, target, record_target=None, secs=1e-4, space=tuning.STOCK):
    """A hand-made record for a workload of ``spec``: stock, the oc loops parallel; default,
    the implementation's hand schedule."""
    impl, func, _ = tuning.workload_func(spec, space, target)
    mod = tvm.IRModule({"main": func})
    database = tuning.open_database(work_dir)
    workload = database.commit_workload(mod)
    sch = s_tir.Schedule(mod)
    if space == tuning.STOCK:
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            sch.parallel(sch.get_loops(block)[1])
    else:
        tvm_deconv.strategy.get(impl).schedule(sch, target)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, workload, [secs], record_target or target,
        ms.arg_info.ArgInfo.from_prim_func(func)))


def lowered_names(mod, target, logs):
    lowered = tvm_deconv.pipeline(target, tuning_logs=logs)(mod)
    return [gv.name_hint for gv, f in lowered.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)]


def test_build_applies_a_tuned_record(tmp_path, caplog):
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target, secs=1e-3, space="default")
    write_record(tmp_path, SPEC, target)
    data, weight = random_inputs(SPEC)
    mod = one_layer(SPEC, weight)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        names = lowered_names(mod, target, str(tmp_path))
    assert any("transpose_tuned" in n for n in names)
    assert any("uses its tuned stock schedule" in r.getMessage() for r in caplog.records)
    vm = relax.VirtualMachine(tvm_deconv.build(mod, target, tuning_logs=str(tmp_path)),
                              tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(data)).numpy()
    assert relative_error(out, conv_transpose_reference(data, weight, SPEC)) < 1e-5


def test_a_record_without_the_default_to_beat_keeps_the_default(tmp_path, caplog):
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target)  # stock only: the default schedule was never timed
    _, weight = random_inputs(SPEC)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        names = lowered_names(one_layer(SPEC, weight), target, str(tmp_path))
    assert not any("tuned" in n for n in names)
    assert any("none for x86.decomposed's default schedule" in r.getMessage()
               for r in caplog.records)


def test_a_default_record_with_an_empty_trace_is_found(tmp_path, caplog):
    """MetaSchedule stores a kernel scheduled in its compute (``x86.phase_tile``) with an
    empty trace, and TVM 0.27's ``get_top_k`` never returns such a record: tuning measured
    that default again each run, and the build kept it over a faster tuned record."""
    target = tvm_deconv.resolve_target("x86-avx512")  # (lowered here, never run)
    spec = make_spec((1, 8, 4, 16), (8, 4, 4, 4), strides=2, padding=1)
    impl, func, _ = tuning.workload_func(spec, tuning.DEFAULT, target)
    assert impl == "x86.phase_tile"
    mod = tvm.IRModule({"main": func})
    database = tuning.open_database(tmp_path)
    database.commit_tuning_record(ms.database.TuningRecord(
        s_tir.Schedule(mod).trace, database.commit_workload(mod), [1e-3], target,
        ms.arg_info.ArgInfo.from_prim_func(func)))
    assert len(tuning.top_records(tuning.open_database(tmp_path), mod)) == 1
    write_record(tmp_path, spec, target, secs=1e-4)  # a faster stock record
    _, weight = random_inputs(spec)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        names = lowered_names(one_layer(spec, weight), target, str(tmp_path))
    assert any("transpose_tuned" in n for n in names)
    assert any("uses its tuned stock schedule" in r.getMessage() for r in caplog.records)


def test_workloads_without_records_keep_the_default_and_say_so(tmp_path, caplog):
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target)
    other = make_spec((1, 4, 4, 4), (4, 3, 4, 4), strides=2, padding=1)  # a changed workload
    _, weight = random_inputs(other)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        names = lowered_names(one_layer(other, weight), target, str(tmp_path))
    assert not any("tuned" in n for n in names)
    assert any("no tuning record for ct2d_4x3" in r.getMessage() for r in caplog.records)


def test_records_of_another_target_are_ignored_with_a_warning(tmp_path, caplog):
    target = tvm_deconv.resolve_target("llvm")
    arm = tvm_deconv.resolve_target("cortex-a72")
    write_record(tmp_path, SPEC, target, record_target=arm)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        database = tuning.load_tuning_logs(tmp_path, target)
    assert len(database.get_all_tuning_records()) == 0
    assert any("llvm-aarch64-cortex-a72" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("which,garbage,message", [
    (tuning.RECORD_FILE, "{not json\n", "corrupt JSON"),
    (tuning.RECORD_FILE, '[7, ["trace", [0.1]]]\n', "refers to workload 7"),
    (tuning.WORKLOAD_FILE, '{"a": 1}\n', "not a MetaSchedule workload"),
])
def test_corrupt_log_names_file_and_line(tmp_path, which, garbage, message):
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target)
    path = tmp_path / which
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + garbage)
    with pytest.raises(tuning.TuningLogError, match=f"{which}:{len(lines) + 1}: .*{message}"):
        tvm_deconv.build(one_layer(SPEC, random_inputs(SPEC)[1]), target,
                         tuning_logs=str(tmp_path))


def test_not_a_log_directory(tmp_path):
    with pytest.raises(tuning.TuningLogError, match="is not a tuning log"):
        tuning.load_tuning_logs(tmp_path, tvm_deconv.resolve_target("llvm"))


def test_tasks_come_from_the_model():
    from tvm_deconv.models import dcgan_generator

    mod, _ = dcgan_generator(ngf=8)
    tasks = tuning.extract_tasks(mod, "llvm", spaces=["default"])
    assert len(tasks) == 5 and len({t.name for t in tasks}) == 5
    # The 1-pixel latent projection is a GEMV; the other four are phase kernels (on AVX-512
    # hosts the phase tile where the width is a multiple of 16, else interleaved where they
    # have many output channels).
    impls = [t.implementation for t in tasks]
    assert impls[0] == "cpu.single_pixel"
    assert set(impls[1:]) <= {"x86.decomposed", "x86.interleaved", "x86.phase_tile"}
    # Only the phase GEMM kernels have a sampled design space.
    ours = tuning.extract_tasks(mod, "llvm", spaces=["ours"])
    assert [t.implementation for t in ours] == [i for i in impls[1:] if i != "x86.phase_tile"]


# k % s == 0 (oc mode, groups), k % s != 0 with output padding (ragged phases), and few
# output channels (w mode: lanes are output columns).
SPACE_SPECS = [
    make_spec((1, 16, 4, 4), (16, 16, 4, 4), strides=2, padding=1, groups=2),
    make_spec((1, 16, 5, 7), (16, 16, 3, 3), strides=2, padding=1, output_padding=1),
    make_spec((1, 8, 9, 9), (8, 3, 5, 5), strides=3, padding=1),
    # 128 input channels: the input-chunk order's design space too
    make_spec((1, 128, 3, 3), (128, 16, 4, 4), strides=2, padding=1),
]


def sampled_candidates(task, target, seeds):
    """Candidates of a task's sampled space as MetaSchedule measures them (postprocessed)."""
    postproc = ms.postproc.RewriteParallelVectorizeUnroll()
    for seed in seeds:
        generator = tuning._space_generator(task, target)  # pylint: disable=protected-access
        context = ms.TuneContext(mod=task.mod, target=target, space_generator=generator,
                                 rand_state=seed)
        for sch in context.space_generator.generate_design_space(task.mod):
            assert postproc.apply(sch)
            yield sch


@pytest.mark.parametrize("spec", SPACE_SPECS, ids=tuning.spec_label)
def test_sampled_space_candidates_are_correct_and_differ(spec):
    target = tvm_deconv.resolve_target("llvm")
    (task,) = tuning.make_tasks([spec], target, spaces=["ours"])
    verifier = tuning.Verifier(task, target)
    decisions = set()
    for sch in sampled_candidates(task, target, seeds=[1, 2, 3]):
        assert verifier.error(sch) < 1e-5
        decisions.add(tuple(str(sch.trace.decisions[inst]) for inst in sch.trace.insts
                            if inst.kind.name in ("SamplePerfectTile", "SampleCategorical")))
    assert len(decisions) >= 2, decisions  # the space really samples


def write_ours_record(work_dir, spec, target, secs=1e-5):
    """A sampled candidate of our space stored as a record, as the tuner stores one, with a
    slower record of the default schedule (the tuner times it too) for it to beat."""
    write_record(work_dir, spec, target, secs=1e-3, space="default")
    (task,) = tuning.make_tasks([spec], target, spaces=["ours"])
    sch = next(sampled_candidates(task, target, seeds=[7]))
    database = tuning.open_database(work_dir)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task.mod), [secs], target,
        ms.arg_info.ArgInfo.from_prim_func(task.func)))


@pytest.mark.parametrize("spec", SPACE_SPECS[1:], ids=tuning.spec_label)
def test_records_of_our_space_round_trip_and_build(tmp_path, caplog, spec):
    target = tvm_deconv.resolve_target("llvm")
    write_ours_record(tmp_path, spec, target)
    data, weight = random_inputs(spec)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(one_layer(spec, weight), target, tuning_logs=str(tmp_path))
    impl = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation.name
    assert any(f"uses its tuned {impl} schedule (ours space" in r.getMessage()
               for r in caplog.records)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_shipped_logs_are_found_by_target_key_and_fall_back_with_a_log_line(
        tmp_path, monkeypatch, caplog):
    target = tvm_deconv.resolve_target("llvm")
    monkeypatch.setattr(tuning, "shipped_logs_root", lambda: tmp_path)
    assert tuning.shipped_log_dir(target) is None
    write_ours_record(tmp_path / tuning.target_key(target), SPACE_SPECS[1], target)
    assert tuning.shipped_log_dir(target) == tmp_path / tuning.target_key(target)
    other = SPACE_SPECS[2]
    for spec, message in ((SPACE_SPECS[1], "uses its tuned"), (other, "no tuning record")):
        data, weight = random_inputs(spec)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tvm_deconv"):
            ex = tvm_deconv.build(one_layer(spec, weight), target)  # tuning_logs=None: shipped
        assert any(message in r.getMessage() and tuning.spec_label(spec) in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
        assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_only_verified_candidates_become_best(tmp_path, monkeypatch):
    """The measure callback: a candidate faster than the best so far is checked against the
    reference; a wrong one is counted and never stored, a right one is."""
    target = tvm_deconv.resolve_target("llvm")
    task = tuning.make_tasks([SPEC], target, spaces=["stock"])[0]
    database = tuning.open_database(tmp_path)
    verifier = tuning.Verifier(task, target)
    callback = tuning.VerifiedCommit(database, task, target, verifier)
    sch = s_tir.Schedule(task.mod)
    args = ms.arg_info.ArgInfo.from_prim_func(task.func)

    def measure(secs):
        callback.apply(ms.task_scheduler.TaskScheduler.create("round-robin"), 0,
                       [ms.MeasureCandidate(sch, args)],
                       [ms.builder.BuilderResult("unused", None)],
                       [ms.runner.RunnerResult([secs], None)])

    measure(2e-3)  # correct (the unscheduled workload): stored
    assert callback.rejected == 0 and len(database.get_all_tuning_records()) == 1
    real_error = tuning.Verifier.error
    monkeypatch.setattr(tuning.Verifier, "error", lambda self, s: float("nan"))
    measure(1e-3)  # faster but "wrong": dropped
    assert callback.rejected == 1 and len(database.get_all_tuning_records()) == 1
    measure(3e-3)  # slower than the best: stored without a check
    assert len(database.get_all_tuning_records()) == 2
    assert callback.best_secs == pytest.approx(2e-3)
    monkeypatch.setattr(tuning.Verifier, "error", real_error)
    assert verifier.error(sch) < 1e-5


@pytest.mark.slow
def test_tune_verifies_resumes_and_discards_wrong_kernels(tmp_path, monkeypatch):
    """A real (tiny) MetaSchedule run in both spaces, then a resume, then a run whose
    verifier rejects everything: nothing wrong is ever stored."""
    target = tvm_deconv.resolve_target("llvm")
    tasks = tuning.make_tasks([SPEC], target)
    results = tuning.tune(tasks, target, tmp_path / "db", trials=2, progress=False, seed=1)
    assert [r.space for r in results] == ["default", "ours", "stock"]
    assert all(r.trials_run >= 1 and r.best_ms > 0 and r.rejected == 0 for r in results)
    assert results[0].trials_run == 1  # the default schedule has no knobs: one point
    again = tuning.tune(tasks, target, tmp_path / "db", trials=2, progress=False)
    assert [r.trials_run for r in again] == [0, 0, 0]
    curves = tuning.tuning_curves(tmp_path / "db", tasks)
    assert [len(c.best_ms) for c in curves] == [r.trials_run for r in results]
    assert all(1 <= c.trials_to(0.9) <= len(c.best_ms) for c in curves)

    monkeypatch.setattr(tuning.Verifier, "error", lambda self, sch, lib=None: float("nan"))
    wrong = tuning.tune(tasks[:1], target, tmp_path / "wrong", trials=2, progress=False)
    assert wrong[0].rejected == 1 and wrong[0].trials_run == 0 and wrong[0].best_ms is None


def test_a_compressed_log_builds_like_the_json_one_and_names_itself_when_corrupt(tmp_path):
    """Shipped logs are xz-compressed (compress_log); they apply the same records."""
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target, secs=1e-3, space="default")
    write_record(tmp_path, SPEC, target)
    plain = lowered_names(one_layer(SPEC, random_inputs(SPEC)[1]), target, str(tmp_path))
    tuning.compress_log(tmp_path)
    assert not (tmp_path / tuning.RECORD_FILE).exists()
    assert lowered_names(one_layer(SPEC, random_inputs(SPEC)[1]), target, str(tmp_path)) == plain
    assert any("transpose_tuned" in n for n in plain)
    import lzma  # pylint: disable=import-outside-toplevel
    packed = tmp_path / (tuning.RECORD_FILE + tuning.COMPRESSED)
    packed.write_bytes(lzma.compress(lzma.decompress(packed.read_bytes()) + b"{not json\n"))
    with pytest.raises(tuning.TuningLogError,
                       match=f"{tmp_path} \\(decompressed\\)/{tuning.RECORD_FILE}:3: .*corrupt"):
        tuning.load_tuning_logs(tmp_path, target)


def test_shipped_logs_hold_only_current_workloads():
    """Every record shipped in tuning_logs/ matches a workload the package builds today for
    its target (a changed compute must come with re-tuned logs, not silently stale ones)."""
    from tvm_deconv import zoo  # pylint: disable=import-outside-toplevel

    root = tuning.shipped_logs_root()
    shipped = [p for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert shipped, "no shipped logs: this test guards them"
    for path in shipped:
        records = tuning.read_log_records(path)
        target = records[0].target
        assert tuning.target_key(target) == path.name
        data_shapes = {tuple(int(d) for d in record.args_info[0].as_json()[2])
                       for record in records}
        batches = {shape[0] for shape in data_shapes}
        specs = [layer.spec(b) for layer in zoo.LAYERS for b in batches]
        # cuda-sm_90 holds FFMA-kernel records of float32 layers that cuda.wgmma (3xTF32) takes
        # since session 27: they apply with its float32 form switched off
        with cuda_wgmma.wgmma_float32(False):
            tasks = tuning.make_tasks([s for s in specs if s.data_shape in data_shapes],
                                      target)
        for record in records:
            mod = record.workload.mod
            assert any(tvm_ffi.structural_equal(mod, task.mod) for task in tasks), \
                f"{path.name}: a record for a workload no zoo task has (stale log)"


def test_export_keeps_the_verified_best_retimed_and_merges_into_a_compressed_folder(
        tmp_path, monkeypatch):
    """``export_logs`` (``tvm-deconv tune --export``): the best record per task, re-timed
    here (not the time stored at tuning), compressed; a second export merges into it; a
    record the verifier rejects is never exported."""
    target = tvm_deconv.resolve_target("llvm")
    other = make_spec((1, 4, 3, 3), (4, 3, 3, 3), strides=2, padding=1)
    for spec in (SPEC, other):
        write_record(tmp_path / "work", spec, target, secs=1e-3, space="default")
        write_record(tmp_path / "work", spec, target, secs=123.0)   # a made-up stored time
    out = tmp_path / "shipped"
    tasks = tuning.make_tasks([SPEC], target, spaces=["default", "stock"])
    assert tuning.export_logs(tmp_path / "work", out, tasks, target, top=1, compress=True) == [
        (t.name, 1) for t in tasks]
    assert tuning._log_files_in(out) == tuning.COMPRESSED  # pylint: disable=W0212
    more = tuning.make_tasks([other], target, spaces=["default", "stock"])
    tuning.export_logs(tmp_path / "work", out, more, target, top=1, compress=True)
    records = tuning.read_log_records(out)
    assert len(records) == 4
    assert all(0 < sum(r.run_secs) / len(r.run_secs) < 1.0 for r in records)  # re-timed
    data, weight = random_inputs(SPEC)
    ex = tvm_deconv.build(one_layer(SPEC, weight), target, tuning_logs=str(out))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    assert relative_error(got, conv_transpose_reference(data, weight, SPEC)) < 1e-5

    monkeypatch.setattr(tuning.Verifier, "error", lambda self, sch, lib=None: float("nan"))
    assert tuning.export_logs(tmp_path / "work", tmp_path / "none", tasks, target, top=1) == [
        (t.name, 0) for t in tasks]


def test_each_space_is_its_own_workload_on_cuda():
    """CUDA's sampled space starts from the default compute; its workload is still its own,
    so trials, best times and tune-report curves are counted per space."""
    target = tvm_deconv.resolve_target("cuda")
    # 8 output channels: cuda.decomposed (up to 4 take cuda.direct).
    spec = make_spec((1, 4, 4, 4), (4, 8, 4, 4), strides=2, padding=1)
    default, ours = tuning.make_tasks([spec], target, spaces=["default", "ours"])
    assert not tvm_ffi.structural_equal(default.mod, ours.mod)
    assert ours.mod["main"].attrs[tuning.SPACE_ATTR] == "ours"


def test_float16_cuda_stock_space_is_metaschedules_tensor_core_space(tmp_path):
    """For float16 calls the tensor-core kernel takes, CUDA's stock space is MetaSchedule's
    tensor-core tiling on that kernel's GEMM form (packed weight); a sample of its design
    that passes the postprocessors builds, as the tuner builds it, to WMMA code nvcc
    accepts.  float32 keeps the canonical compute."""
    from tvm_deconv.schedules import cuda_tensorcore

    target = tvm_deconv.resolve_target("cuda")
    spec = make_spec((2, 32, 4, 4), (32, 32, 4, 4), strides=2, padding=1, dtype="float16")
    assert tuning.stock_on_tensor_cores(spec, target)
    _, func, pack = tuning.workload_func(spec, tuning.STOCK, target)
    assert pack is not None and cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(func))
    fp32 = make_spec((2, 32, 4, 4), (32, 32, 4, 4), strides=2, padding=1)
    assert not tuning.stock_on_tensor_cores(fp32, target)
    assert tuning.workload_func(fp32, tuning.STOCK, target)[2] is None

    (task,) = tuning.make_tasks([spec], target, spaces=[tuning.STOCK])
    context = ms.TuneContext(mod=task.mod, target=target,
                             space_generator=tuning._space_generator(task, target),
                             search_strategy="replay-trace", task_name=task.name)
    built = 0
    designs = context.space_generator.generate_design_space(task.mod)
    for i, design in enumerate(designs):
        lib = None
        for seed in range(1, 31):  # VerifyGPUCode & co. reject some samples of a design
            sch = s_tir.Schedule(task.mod, seed=seed)
            s_tir.Trace(design.trace.insts, {}).apply_to_schedule(sch, remove_postproc=True)
            if not all(post.apply(sch) for post in context.space_generator.postprocs):
                continue
            try:  # a failed build is a failed trial; the tuner measures the others
                with tvm_deconv.kernel_context(target):
                    lib = tvm.compile(sch.mod["main"].with_attr("tirx.is_scheduled", True),
                                      target)
                break
            except tvm.error.InternalError:
                continue
        if lib is None:
            continue
        src = lib.mod.imports[0].inspect_source()
        assert "mma_sync" in src
        built += 1
        assert nvcc_errors(src, tmp_path / str(i)) is None
    assert built == len(designs) == 1


def _deconv_batch_norm_module(spec, weight):
    """conv2d_transpose -> batch_norm (training mode: batch statistics, which FoldBatchNorm
    leaves alone) -> relu: the batch norm stays PrimFuncs of its own, what rest-of-model tuning
    is for."""
    rng = np.random.default_rng(5)
    channels = spec.out_channels
    stats = [relax.const(v.astype("float32")) for v in (
        rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels),
        rng.standard_normal(channels), rng.uniform(0.5, 1.5, channels))]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d_transpose(
                x, relax.const(weight), strides=spec.strides, padding=spec.pad_before))
            y = bb.emit(relax.TupleGetItem(relax.op.nn.batch_norm(y, *stats, axis=1), 0))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def test_rest_of_model_tuning_is_verified_applied_and_resumable(tmp_path):
    from tvm_deconv.build import ApplyRestOfModelRecords, front_passes

    data, weight = random_inputs(SPEC, seed=3)
    mod = _deconv_batch_norm_module(SPEC, weight)
    target = tvm_deconv.resolve_target("llvm")
    rest = tuning.rest_of_model_tasks(mod, target)
    assert rest  # (the batch norm's statistics, folded, and the relu)
    results = tvm_deconv.tune(mod, target, tmp_path, trials=1, spaces=["default"],
                              rest_of_model=True, progress=False)
    rest_rows = [r for r in results if r.space == tuning.REST]
    assert len(rest_rows) == len(rest)
    assert all(r.trials_run == 1 and r.best_ms and r.rejected == 0 for r in rest_rows)
    # the build applies the records: every PrimFunc leaves the front passes scheduled
    database = tuning.load_tuning_logs(tmp_path / tuning.REST_DIR, target)
    with target:
        lowered = tvm.transform.Sequential(
            front_passes(target, tuning_logs=tmp_path) + [ApplyRestOfModelRecords(database)])(mod)
    funcs = [f for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert funcs and all(f.attrs.get("tirx.is_scheduled", False) for f in funcs)
    outs = []
    for logs in (False, tmp_path):
        vm = relax.VirtualMachine(tvm_deconv.build(mod, target, tuning_logs=logs), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(data)).numpy())
    assert np.abs(outs[0]).max() > 0 and relative_error(outs[1], outs[0]) < 1e-6
    again = tuning.tune(mod, target, tmp_path, trials=1, spaces=["default"],
                        rest_of_model=True, progress=False)
    assert all(r.trials_run == 0 for r in again)


def test_rest_verifier_tells_a_wrong_kernel_from_a_right_one():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def relu(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        for i in range(64):
            with T.sblock("relu"):
                v = T.axis.remap("S", [i])
                b[v] = T.max(a[v], T.float32(0))

    @T.prim_func(s_tir=True)
    def identity(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        for i in range(64):
            with T.sblock("relu"):
                v = T.axis.remap("S", [i])
                b[v] = a[v]

    target = tvm_deconv.resolve_target("llvm")
    task = tuning.RestTask("relu", tvm.IRModule({"main": relu}))
    verifier = tuning.RestVerifier(task, target)
    right = s_tir.Schedule(task.mod)
    right.parallel(right.get_loops(right.get_sblock("relu"))[0])
    assert verifier.error(right) < verifier.tolerance
    assert verifier.error(s_tir.Schedule(tvm.IRModule({"main": identity}))) > 0.1


def test_pooled_builder_keeps_its_workers_between_batches():
    """Each batch of LocalBuilder starts fresh workers (29 s for one candidate on the H100
    machine); PooledBuilder's stay, and a candidate that does not build is an error result."""
    target = tvm_deconv.resolve_target("llvm")
    x = tvm.te.placeholder((64,), name="x")
    good = tvm.IRModule({"main": tvm.te.create_prim_func(
        [x, tvm.te.compute((64,), lambda i: x[i] + 1.0, name="y")])})
    bad = tvm.IRModule({"main": good["main"].with_attr("target", "not a target")})
    others = _child_processes()  # (earlier tests' runner workers)
    builder = tuning.PooledBuilder(max_workers=1)
    try:
        first = builder.build([ms.builder.BuilderInput(good, target)])
        workers = _child_processes() - others
        second = builder.build([ms.builder.BuilderInput(good, target),
                                ms.builder.BuilderInput(bad, target)])
        assert _child_processes() - others == workers and len(workers) == 1
    finally:
        builder.close()
    assert not _child_processes() & workers
    assert first[0].error_msg is None and second[0].error_msg is None
    assert os.path.exists(second[0].artifact_path) and second[1].error_msg
    # A board's builder is one too, exporting the shared library its RPC server loads.
    from tvm_deconv.rpc import Board

    board_builder = Board("127.0.0.1", 9190, "no-board-needed").builder()
    try:
        (built,) = board_builder.build([ms.builder.BuilderInput(good, target)])
    finally:
        board_builder.close()
    assert built.error_msg is None and built.artifact_path.endswith(".so")
    assert os.path.exists(built.artifact_path)


def _child_processes() -> set:
    """This process's children. (psutil, a dependency already: reading
    /proc/self/task/*/children raced with a pool thread ending, which took its file along.)"""
    return {child.pid for child in psutil.Process().children()}


def test_search_population_shrinks_with_the_phase_count():
    from tvm_deconv import zoo

    assert tuning.search_population(zoo.get("dcgan_256_128_k4s2").spec(1)) == 512  # 4 phases
    assert tuning.search_population(zoo.get("fsrcnn_x3_56_1_k9s3").spec(1)) == 455  # 9
    fcn8s = zoo.get("fcn8s_21_21_k16s8").spec(1)                                      # 64
    assert tuning.search_population(fcn8s) == tuning.MIN_POPULATION


def test_tune_command_takes_zoo_models_and_checks_rest_of_model(tmp_path, capsys):
    from tvm_deconv.cli import main

    work = ["--work-dir", str(tmp_path / "w")]
    assert main(["tune", "--layers", "dcgan_64_3_k4s2", "--rest-of-model"] + work) == 2
    assert "--rest-of-model needs --model" in capsys.readouterr().err
    assert main(["tune", "--model", "nosuchnet"] + work) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nosuchnet'" in err and "pix2pix" in err and "Traceback" not in err


def test_retiming_replaces_lucky_tuning_times_and_fails_wrong_records(tmp_path, monkeypatch,
                                                                       caplog):
    """``retime_records`` (the end of every CPU tuning run): a record whose time at tuning
    was lucky (here made up: the stock record with its loops merely parallel is far slower
    than the default schedule) loses to the default schedule once both run side by side;
    the default record keeps a real time; a wrong record is stored as failed and never built."""
    target = tvm_deconv.resolve_target("llvm")
    write_record(tmp_path, SPEC, target, secs=1e-3, space="default")
    write_record(tmp_path, SPEC, target, secs=1e-9)   # lucky: 1 ns
    tasks = tuning.make_tasks([SPEC], target, spaces=["default", "stock"])
    best = tuning.retime_records(tmp_path, tasks, target, rounds=2)
    by_space = {t.space: best[t.name] for t in tasks}
    assert 0 < by_space["default"] < by_space["stock"] < 1.0, by_space
    data, weight = random_inputs(SPEC)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(one_layer(SPEC, weight), target, tuning_logs=str(tmp_path))
    assert any("(default space" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records]
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    assert relative_error(out, conv_transpose_reference(data, weight, SPEC)) < 1e-5

    monkeypatch.setattr(tuning.Verifier, "error", lambda self, sch, lib=None: float("nan"))
    assert tuning.retime_records(tmp_path, tasks, target, rounds=1) == {}
    records = tuning.read_log_records(tmp_path)
    assert len(records) == 2 and all(
        float(r.run_secs[0]) == tuning.FAILED_SECS for r in records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        tvm_deconv.build(one_layer(SPEC, weight), target, tuning_logs=str(tmp_path))
    assert not any("uses its tuned" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records]
