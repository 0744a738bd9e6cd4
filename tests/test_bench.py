"""``tvm-deconv bench``: suites, reference checks, reports.  Small sizes, one repeat: these
check what is measured and reported, never how fast anything is."""

import json
import math
from collections import namedtuple

import numpy as np
import pytest

import tvm_deconv
from tvm_deconv import bench, tuning, zoo
from tvm_deconv.cli import main
from tvm_deconv.models import build_model
from tvm_deconv.plan import make_plan
from tvm_deconv.testing import has_gpu

QUICK = ["--repeat", "1", "--min-repeat-ms", "0", "--tvm-default-repeat", "1"]

# The shape of zoo.DILATED_LAYERS entries (issue 8); a stand-in until zoo.py has them.
DilatedZooLayer = namedtuple("DilatedZooLayer", "name in_channels out_channels in_size kernel "
                                                "dilation padding")
STAND_IN_DILATED = (DilatedZooLayer("deeplab_aspp_8_8_d6", 8, 8, (12, 12), 3, 6, 6),
                    DilatedZooLayer("wavenet_8_8_d4", 8, 8, (32,), 2, 4, 2))


def _bench(tmp_path, *argv):
    out = tmp_path / "bench.json"
    code = main(["bench", *QUICK, "--json", str(out), *argv])
    return code, json.loads(out.read_text()) if out.exists() else None


def _check_all_ran_and_match(row, impls):
    for impl in impls:
        entry = row["impls"][impl]
        if "not available" in entry.get("error", ""):
            continue
        assert "error" not in entry, (impl, entry)
        assert entry["rel_error"] < 1e-5 and entry["median_ms"] > 0, (impl, entry)


def test_model_suite_checks_every_implementation_and_writes_reports(tmp_path):
    pytest.importorskip("torch", reason="the models' reference is PyTorch eager")
    md, png = tmp_path / "t.md", tmp_path / "t.png"
    plot = ["--plot", str(png)] if _has_matplotlib() else []
    code, result = _bench(tmp_path, "--models", "fsrcnn_x3", "--small", "--breakdown",
                          "--markdown", str(md), *plot)
    assert code == 0
    assert result["suite"] == "models"
    (row,) = result["rows"]
    assert row["name"] == "fsrcnn_x3" and row["reference"] == "pytorch float64"
    _check_all_ran_and_match(row, ["ours", "tvm_default", "onnxruntime", "pytorch"])
    assert row["speedup_vs_tvm_default"] == pytest.approx(
        row["impls"]["tvm_default"]["median_ms"] / row["impls"]["ours"]["median_ms"])
    parts = row["impls"]["ours"]["breakdown_ms"]
    assert parts["deconv"] > 0 and parts["total"] >= parts["deconv"]
    # (ours runs FSRCNN's stride-1 convs as transposed convs: ConvAsTransposedConv)
    default_parts = row["impls"]["tvm_default"]["breakdown_ms"]
    assert default_parts["deconv"] > 0 and default_parts["conv"] > 0
    text = md.read_text()
    assert "| model | N | ours ms | tvm_default ms |" in text and "| fsrcnn_x3 | 1 |" in text
    assert "transposed convs ms" in text
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        return True
    except ImportError:
        return False


def test_layer_suite_against_float64_reference(tmp_path):
    code, result = _bench(tmp_path, "--layers", "dcgan_64_3_k4s2", "--batch", "1",
                          "--skip-torch", "--skip-ort", "--shipped-logs")
    assert code == 0 and result["suite"] == "layers"
    (row,) = result["rows"]
    _check_all_ran_and_match(row, ["ours", "ours_shipped", "tvm_default"])
    assert row["workspace_bytes"] is not None
    # 2·N·Cin·Cout·in_h·in_w·k² useful FLOPs (no zero insertion).
    assert row["useful_gflop"] == pytest.approx(2 * 64 * 3 * 32 * 32 * 16 / 1e9)


def test_an_interrupted_run_keeps_its_finished_rows(tmp_path, monkeypatch):
    """JSON and Markdown are written after every row: a run stopped in its second row (a
    device call's time limit) leaves the first row in both."""
    finished = []
    real = bench.bench_case

    def stop_in_second_row(case, args, bar):
        if finished:
            raise KeyboardInterrupt
        finished.append(real(case, args, bar))
        return finished[-1]

    monkeypatch.setattr(bench, "bench_case", stop_in_second_row)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    with pytest.raises(KeyboardInterrupt):
        main(["bench", *QUICK, "--layers", "dcgan_64_3_k4s2,dcgan_128_64_k4s2", "--batch", "1",
              "--skip-torch", "--skip-ort", "--skip-tvm-default", "--json", str(out),
              "--markdown", str(md)])
    assert [r["name"] for r in json.loads(out.read_text())["rows"]] == ["dcgan_64_3_k4s2"]
    text = md.read_text()
    assert "| dcgan_64_3_k4s2 | 1 |" in text and "dcgan_128_64" not in text


def test_dilated_suite_on_a_stand_in_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "DILATED_LAYERS", STAND_IN_DILATED, raising=False)
    code, result = _bench(tmp_path, "--suite", "dilated")
    assert code == 0 and result["suite"] == "dilated"
    assert [r["name"] for r in result["rows"]] == [l.name for l in STAND_IN_DILATED]
    for row in result["rows"]:
        _check_all_ran_and_match(row, ["ours", "tvm_default", "onnxruntime", "pytorch"])
    # 2-d: 2·N·Cout·out_h·out_w·Cin·k² useful FLOPs (same padding keeps 12×12).
    assert result["rows"][0]["useful_gflop"] == pytest.approx(2 * 8 * 12 * 12 * 8 * 9 / 1e9)


def test_dilated_suite_without_zoo_entries_names_the_gap(monkeypatch, capsys):
    monkeypatch.delattr(zoo, "DILATED_LAYERS", raising=False)
    assert main(["bench", "--suite", "dilated"]) == 2
    assert "zoo.DILATED_LAYERS" in capsys.readouterr().err


def test_unknown_names_are_errors_listing_the_known_ones(capsys):
    assert main(["bench", "--models", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "unknown model(s) resnet50" in err and "pix2pix_unet" in err
    assert main(["bench", "--layers", "nope"]) == 2
    assert "dcgan_512_256_k4s2" in capsys.readouterr().err


def test_a_wrong_implementation_is_reported_and_never_timed():
    ref = np.ones((2, 3))

    def timer(*_):
        raise AssertionError("a wrong result must not be timed")

    case = bench.Case("x", 1, 6, lambda: ref, 1e-5)
    entry = bench.run_impl(lambda: bench.Prepared(lambda: ref * 1.01, timer), case, ref, 1, 0,
                           False)
    assert entry["error"].startswith("WRONG RESULT") and "median_ms" not in entry
    entry = bench.run_impl(lambda: bench.Prepared(lambda: ref[:1], timer), case, ref, 1, 0,
                           False)
    assert entry["error"].startswith("WRONG SHAPE")


def test_peak_memory_sees_an_allocation():
    mib = 48

    def allocate():
        a = np.ones(mib * 2 ** 20 // 8)
        return a[:1].copy()

    bench.fix_malloc_threshold()
    _, peak = bench.peak_memory(allocate)
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert mib * 2 ** 20 * 0.9 <= peak < mib * 2 ** 20 * 2


def test_model_flops_match_the_layer_zoo():
    """DCGAN's deconvs are zoo layers: the model's useful FLOPs are theirs summed."""
    flops = bench.model_flops(build_model("dcgan").mod)
    layers = [l for l in zoo.LAYERS if l.name.startswith("dcgan_")]
    assert flops == {"conv": 0,
                     "deconv": sum(make_plan(l.spec(1)).useful_flops() for l in layers)}
    fsrcnn = bench.model_flops(build_model("fsrcnn_x3").mod)
    hw = 128 * 128
    conv = 2 * hw * (56 * 25 + 12 * 56 + 4 * 12 * 12 * 9 + 56 * 12)
    assert fsrcnn == {"conv": conv, "deconv": 2 * hw * 56 * 81}


def test_gpu_rows_tune_the_stock_space_only_on_tensor_cores():
    """CPU rows tune all three spaces; GPU rows drop the stock space (no valid candidate of
    the decomposed compute) except float16 calls on the tensor cores, whose stock space is
    MetaSchedule's tensor-core tiling."""
    cuda, llvm = tvm_deconv.resolve_target("cuda"), tvm_deconv.resolve_target("llvm")
    layer = zoo.get("pose_256_256_k4s2")
    assert bench.tuning_spaces(layer.spec(1), llvm) == tuning.SPACES
    assert bench.tuning_spaces(layer.spec(64), cuda) == (tuning.DEFAULT, tuning.OURS)
    assert bench.tuning_spaces(layer.spec(64, dtype="float16"), cuda) == tuning.SPACES
    few = zoo.get("dcgan_64_3_k4s2").spec(64, dtype="float16")  # 3 channels: no tensor cores
    assert bench.tuning_spaces(few, cuda) == (tuning.DEFAULT, tuning.OURS)


def test_markdown_states_the_tuning_budget_and_ratios():
    row = bench.finish_row({"name": "m", "batch": 1, "impls": {
        "ours": {"median_ms": 2.0, "min_ms": 1.9, "max_ms": 2.1, "gflops": 5.0},
        "tvm_default": {"median_ms": 8.0, "min_ms": 8.0, "max_ms": 8.0},
        "ours_tuned": {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0},
        "tvm_default_tuned": {"median_ms": 4.0, "min_ms": 4.0, "max_ms": 4.0},
        "onnxruntime": {"median_ms": 3.0, "min_ms": 3.0, "max_ms": 3.0},
        "pytorch": {"error": "not available (No module named 'torch')"}}})
    assert row["speedup_vs_best_peer"] == 1.5 and row["speedup_vs_tvm_default"] == 4.0
    assert row["tuned_speedup_vs_tvm_default"] == 4.0
    table = bench.markdown_table([row], list(row["impls"]), "models", tune_trials=16)
    assert "ours_tuned (16 trials) ms" in table and "tvm_default_tuned (16 trials) ms" in table
    assert "| m | 1 | 2.000 (±5%) |" in table and "| n/a |" in table
    assert "1.50x" in table and "4.00x" in table
    assert math.isclose(row["tuned_speedup_vs_best_peer"], 3.0)


@pytest.mark.slow
def test_tuned_columns_are_checked_and_resume(tmp_path):
    """ours and TVM's default tuned with 2 trials each; a second run adds no trials."""
    work = tmp_path / "work"
    argv = ["--layers", "dcgan_64_3_k4s2", "--skip-torch", "--skip-ort", "--skip-tvm-default",
            "--tune-trials", "2", "--work-dir", str(work)]
    code, result = _bench(tmp_path, *argv)
    assert code == 0
    _check_all_ran_and_match(result["rows"][0], ["ours", "ours_tuned", "tvm_default_tuned"])
    records = _candidates(work)
    assert len(records) == 2 and all(records.values())
    assert main(["bench", *QUICK, *argv]) == 0
    assert _candidates(work) == records


def _candidates(work) -> dict:
    """Each tuning database's records as (workload, trace) pairs: a re-run may re-time them
    (ours on CPUs ends by re-timing its best records), but adds none."""
    return {path: [(entry[0], json.dumps(entry[1][0])) for entry in
                   map(json.loads, path.read_text().splitlines())]
            for path in work.rglob("database_tuning_record.json")}


def test_ours_tuned_without_a_design_space_is_the_untuned_build(tmp_path):
    """A call whose kernel has no design space (cuda.wgmma) leaves ours_tuned no task: its
    column is the untuned build with 0 trials, not a missing tuning log (H100, session 27)."""
    import tvm  # pylint: disable=import-outside-toplevel

    spec = zoo.get("dcgan_64_3_k4s2").spec(1)
    mod = tvm_deconv.testing.transposed_conv_module(spec)
    data, weight = tvm_deconv.testing.random_inputs(spec, seed=0)
    info = {}
    ex = bench._ours_tuned(mod, {"w": weight}, [], tvm_deconv.resolve_target("llvm"), 8,
                           tmp_path / "ours", info, workers=None)  # (no task: none started)
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(data)).numpy()
    ref = tvm_deconv.testing.conv_transpose_reference(data, weight, spec)
    assert tvm_deconv.testing.relative_error(out, ref) < 1e-5
    assert info["trials_measured"] == 0 and not (tmp_path / "ours").exists()


def test_sgemm_peak_is_measured_and_divides_ours_in_the_table():
    pytest.importorskip("onnxruntime")
    peak = bench.sgemm_peak_gflops(1, size=256, repeat=2)
    assert 0.1 < peak < 1e5
    row = bench.finish_row({"name": "l", "batch": 1, "impls": {
        "ours": {"median_ms": 2.0, "min_ms": 2.0, "max_ms": 2.0, "gflops": 50.0}}})
    table = bench.markdown_table([row], ["ours"], "layers", sgemm_peak=200.0)
    assert "% of SGEMM peak" in table and "| 50.0 | 25% |" in table
    assert "% of SGEMM peak" not in bench.markdown_table([row], ["ours"], "layers")


def test_bad_dtype_and_suite_for_the_target_are_errors_naming_the_fix(capsys):
    assert main(["bench", "--layers", "dcgan_64_3_k4s2", "--dtype", "float16"]) == 2
    assert "--target cuda" in capsys.readouterr().err
    assert main(["bench", "--layers", "dcgan_64_3_k4s2", "--dtype", "bfloat16"]) == 2
    assert "float32, float16" in capsys.readouterr().err
    assert main(["bench", "--target", "cuda", "--models", "dcgan"]) == 2
    assert "--suite layers" in capsys.readouterr().err


def test_gpu_rows_compare_with_cudnn_of_their_dtype_and_show_it():
    def entry(ms):
        return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "gflops": 1.0}

    rows = [bench.finish_row({"name": "l", "batch": 64, "dtype": dtype, "peers": ["cudnn"],
                              "impls": {"ours": entry(2.0), "cudnn": entry(3.0),
                                        "cudnn_tf32": entry(1.0)}})
            for dtype in ("float32", "float16")]
    # TF32 is faster here but never the peer: the ratio is against cuDNN without it.
    assert all(row["speedup_vs_best_peer"] == 1.5 for row in rows)
    table = bench.markdown_table(rows, ["ours", "cudnn", "cudnn_tf32"], "layers")
    assert "| l | 64 | float16 | 2.000 (±0%) |" in table and "peak MiB" not in table


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu(), reason="no NVIDIA GPU (tvm.cuda(0) missing)")
def test_cuda_bench_checks_every_column_against_float64(tmp_path):
    pytest.importorskip("torch", reason="cuDNN is timed through PyTorch")
    code, result = _bench(tmp_path, "--target", "cuda", "--layers", "dcgan_64_3_k4s2",
                          "--dtype", "float32,float16", "--tune-trials", "2",
                          "--cost-model", "random", "--work-dir", str(tmp_path / "work"))
    assert code == 0
    fp32, fp16 = result["rows"]
    assert (fp32["dtype"], fp16["dtype"]) == ("float32", "float16")
    for row, tol in ((fp32, 1e-5), (fp16, 2e-3)):
        for impl in ("ours", "tvm_default", "ours_tuned", "tvm_default_tuned", "cudnn"):
            entry = row["impls"][impl]
            assert "error" not in entry, (row["dtype"], impl, entry)
            assert entry["rel_error"] < tol and entry["median_ms"] > 0
        assert row["speedup_vs_best_peer"] == pytest.approx(
            row["impls"]["cudnn"]["median_ms"] / row["impls"]["ours"]["median_ms"])
    assert "cudnn_tf32" in fp32["impls"] and "cudnn_tf32" not in fp16["impls"]
