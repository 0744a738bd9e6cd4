"""Zoo layers on the GPU: ours (untuned) vs TVM's default lowering vs cuDNN through torch.

Run on the device machine (see shared/device/README.md):

    source .dev/setup.sh && python3 benchmarks/cuda_zoo.py --batches 1 --out $OUT/h100-b1.json

Per layer and batch (1, 64): build ours with ``tvm_deconv.build(..., "cuda")`` and TVM's
default with ``decompose=False`` (weights bound as constants, as in inference), time both
with the VM's time_evaluator (warm-up, median of repeats), and cuDNN through torch with CUDA
events (fp32 with TF32 off, TF32, fp16).  Every output is checked against a float64 reference
(torch float64 on the GPU, itself checked against tvm_deconv.testing on a small case).
fp16 layers the tensor-core path takes (schedules/cuda_tensorcore.py) are also built and timed
with it switched off (``ours_fp16_ffma``: the FFMA kernel), in the same run.  ``--skip-fp32``
times fp16 only (ours, FFMA, and cuDNN's three), ``--skip-tvm-default`` skips TVM's default.
Prints a Markdown table last; writes all numbers to the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.plan import make_plan  # noqa: E402
from tvm_deconv.schedules import cuda_tensorcore  # noqa: E402
from tvm_deconv.testing import conv_transpose_reference, relative_error  # noqa: E402

CUDA_TARGET = tvm_deconv.resolve_target("cuda")

OPS = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
       3: relax.op.nn.conv3d_transpose}
TORCH_OPS = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
             3: torch.nn.functional.conv_transpose3d}


def one_layer(spec) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, spec.dtype))
    w = relax.Var("w", relax.TensorType(spec.weight_shape, spec.dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(OPS[spec.ndim](x, w, strides=spec.strides,
                                       padding=spec.pad_before + spec.pad_after,
                                       output_padding=spec.output_padding,
                                       dilation=spec.dilation, groups=spec.groups))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def torch_conv(spec, x, w):
    pad = spec.pad_before
    assert spec.pad_before == spec.pad_after
    return TORCH_OPS[spec.ndim](x, w, stride=spec.strides, padding=pad,
                                output_padding=spec.output_padding, groups=spec.groups,
                                dilation=spec.dilation)


def random_case(spec):
    """Random inputs of ``spec`` (seed 0, its dtype), on the host and the GPU, and the float64
    result of those inputs through torch: ``(x, w, x_gpu, w_gpu, ref)``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.data_shape).astype(spec.dtype)
    w = rng.standard_normal(spec.weight_shape).astype(spec.dtype)
    xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
    return x, w, xt, wt, torch_conv(spec, xt.double(), wt.double()).cpu().numpy()


def time_tvm(vm, dev, args, budget_s):
    """Median ms of VM main(*args): warm-up, then repeats of `number` calls each."""
    vm["main"](*args)
    dev.sync()
    t0 = time.perf_counter()
    vm["main"](*args)
    dev.sync()
    once = time.perf_counter() - t0
    number = max(1, min(100, int(0.01 / max(once, 1e-6))))
    repeat = max(3, min(30, int(budget_s / max(once * number, 1e-6))))
    res = vm.time_evaluator("main", dev, number=number, repeat=repeat)(*args)
    return float(np.median(np.asarray(res.results)) * 1e3), number, repeat


def time_torch(fn, reps=50, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def build_check_time(row, key, spec, x, w, ref, dev, budget_s):
    """Build ``spec`` as one layer through ``tvm_deconv.build`` (weight constant, no tuning
    logs), check its output against ``ref`` and time it: ``row[key + "_err"]`` and
    ``row[key + "_ms"]``, or ``row[key + "_error"]`` where it fails."""
    try:
        ex = tvm_deconv.build(one_layer(spec), "cuda", params={"w": w}, tuning_logs=False)
        vm = relax.VirtualMachine(ex, dev)
        x_nd = tvm.runtime.tensor(x, dev)
        out = vm["main"](x_nd).numpy().astype("float64")
        row[key + "_err"] = relative_error(out, ref)
        row[key + "_ms"] = time_tvm(vm, dev, [x_nd], budget_s)[0]
    except Exception as err:  # pylint: disable=broad-except
        row[key + "_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        traceback.print_exc()


def check_torch_reference() -> float:
    """torch's conv_transpose in float64 == tvm_deconv.testing's reference (semantics)."""
    spec = zoo.get("fsrcnn_x3_56_1_k9s3").spec(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.data_shape)
    w = rng.standard_normal(spec.weight_shape)
    ours = conv_transpose_reference(x, w, spec)
    theirs = torch_conv(spec, torch.from_numpy(x), torch.from_numpy(w)).numpy()
    return relative_error(theirs, ours)


def bench(layer, batch, dev, skip_default_over_ms, time_budget_s, tuning_logs=None,
          skip_default=False, skip_fp32=False):
    spec = layer.spec(batch)
    plan = make_plan(spec)
    row = {"layer": layer.name, "batch": batch, "gflop": plan.useful_flops() / 1e9}
    rng = np.random.default_rng(batch)
    x = rng.standard_normal(spec.data_shape).astype("float32")
    w = rng.standard_normal(spec.weight_shape).astype("float32")
    xt = torch.from_numpy(x).cuda()
    wt = torch.from_numpy(w).cuda()
    ref = torch_conv(spec, xt.double(), wt.double()).cpu().numpy()
    # fp16 runs are checked against the float64 result of the fp16-rounded inputs.
    spec16 = layer.spec(batch, dtype="float16")
    x16, w16 = x.astype("float16"), w.astype("float16")
    ref16 = torch_conv(spec, torch.from_numpy(x16).cuda().double(),
                       torch.from_numpy(w16).cuda().double()).cpu().numpy()
    runs = [("ours", spec, x, w, True, ref, False), ("tvm_default", spec, x, w, False, ref, False),
            ("ours_fp16", spec16, x16, w16, True, ref16, False)]
    if tuning_logs:
        runs.insert(1, ("ours_tuned", spec, x, w, True, ref, tuning_logs))
    # fp16 with the tensor cores off too (the FFMA kernel), where the tensor-core path applies.
    tc_reason = cuda_tensorcore.tensor_core_reason(spec16, CUDA_TARGET)
    row["ours_fp16_tensor_cores"] = tc_reason is None
    if tc_reason is None:
        runs.append(("ours_fp16_ffma", spec16, x16, w16, True, ref16, False))
    else:
        row["ours_fp16_tensor_cores_note"] = tc_reason
    skipped = ({"tvm_default"} if skip_default else set()) | (
        {"ours", "tvm_default", "ours_tuned"} if skip_fp32 else set())
    runs = [r for r in runs if r[0] not in skipped]
    for key, sp, xa, wa, decompose, expected, logs in runs:
        if key == "ours_fp16":
            chosen = strategy.select(strategy.CONV_TRANSPOSE, sp, CUDA_TARGET)
            if chosen.implementation is None:
                row[key + "_note"] = "fp16 falls back to TVM's default: " + chosen.reason()
                continue
        try:
            t0 = time.perf_counter()
            with cuda_tensorcore.tensor_cores(key != "ours_fp16_ffma"):
                ex = tvm_deconv.build(one_layer(sp), "cuda", params={"w": wa},
                                      decompose=decompose, tuning_logs=logs)
            vm = relax.VirtualMachine(ex, dev)
            x_nd = tvm.runtime.tensor(xa, dev)
            out = vm["main"](x_nd)
            dev.sync()
            row[key + "_build_s"] = time.perf_counter() - t0
            row[key + "_err"] = relative_error(out.numpy().astype("float64"), expected)
            t0 = time.perf_counter()
            vm["main"](x_nd)
            dev.sync()
            once_ms = (time.perf_counter() - t0) * 1e3
            if key == "tvm_default" and once_ms > skip_default_over_ms:
                row[key + "_ms"] = once_ms  # one call only: too slow to repeat
                row[key + "_note"] = "single call"
            else:
                row[key + "_ms"], row[key + "_number"], row[key + "_repeat"] = time_tvm(
                    vm, dev, [x_nd], time_budget_s)
        except Exception as err:  # pylint: disable=broad-except
            row[key + "_error"] = f"{type(err).__name__}: {str(err)[:300]}"
            traceback.print_exc()

    torch.backends.cudnn.benchmark = True
    variants = (("cudnn_fp32", torch.float32, False), ("cudnn_tf32", torch.float32, True),
                ("cudnn_fp16", torch.float16, True))
    for key, dtype, tf32 in variants:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        xx, ww = xt.to(dtype), wt.to(dtype)
        with torch.no_grad():
            out = torch_conv(spec, xx, ww)
            row[key + "_err"] = relative_error(out.double().cpu().numpy(), ref)
            row[key + "_ms"] = time_torch(lambda: torch_conv(spec, xx, ww))
    torch.backends.cudnn.allow_tf32 = False
    for key in ("ours", "ours_tuned", "ours_fp16", "ours_fp16_ffma", "tvm_default",
                "cudnn_fp32", "cudnn_tf32", "cudnn_fp16"):
        if key + "_ms" in row:
            row[key + "_gflops"] = row["gflop"] / (row[key + "_ms"] * 1e-3)
    if "ours_tuned_ms" in row and "cudnn_fp32_ms" in row:
        row["ours_tuned_vs_cudnn_fp32"] = row["cudnn_fp32_ms"] / row["ours_tuned_ms"]
    if "ours_ms" in row:
        for key in ("tvm_default", "cudnn_fp32", "cudnn_tf32", "cudnn_fp16"):
            if key + "_ms" in row:
                row["ours_vs_" + key] = row[key + "_ms"] / row["ours_ms"]
    for key in ("ours_fp16", "ours_fp16_ffma"):
        if key + "_ms" in row and "cudnn_fp16_ms" in row:
            row[key + "_vs_cudnn_fp16"] = row["cudnn_fp16_ms"] / row[key + "_ms"]
    if "ours_fp16_ms" in row and "ours_fp16_ffma_ms" in row:
        row["tensor_cores_vs_ffma"] = row["ours_fp16_ffma_ms"] / row["ours_fp16_ms"]
    return row


def fmt(v, spec="{:.3f}"):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)


def table(rows) -> str:
    tuned = any("ours_tuned_ms" in r for r in rows)
    head = ("| layer | N | ours ms | " + ("ours tuned ms | tuned ×cuDNN fp32 | " if tuned else "")
            + "TVM default ms | cuDNN fp32 ms | cuDNN TF32 ms | "
            "ours fp16 ms | cuDNN fp16 ms | ×TVM default | ×cuDNN fp32 | fp16 ×cuDNN fp16 | "
            "fp16 FFMA ms | FFMA ×cuDNN fp16 | ours GFLOP/s | ours err | fp16 err |")
    lines = [head, "|" + "---|" * (18 if tuned else 16)]
    for r in rows:
        tuned_cells = (f"{fmt(r.get('ours_tuned_ms'))} | "
                       f"{fmt(r.get('ours_tuned_vs_cudnn_fp32'), '{:.2f}')} | " if tuned else "")
        lines.append(
            f"| {r['layer']} | {r['batch']} | {fmt(r.get('ours_ms'))} | {tuned_cells}"
            f"{fmt(r.get('tvm_default_ms'))}{'*' if r.get('tvm_default_note') else ''} | "
            f"{fmt(r.get('cudnn_fp32_ms'))} | {fmt(r.get('cudnn_tf32_ms'))} | "
            f"{fmt(r.get('ours_fp16_ms'))} | "
            f"{fmt(r.get('cudnn_fp16_ms'))} | {fmt(r.get('ours_vs_tvm_default'), '{:.1f}')} | "
            f"{fmt(r.get('ours_vs_cudnn_fp32'), '{:.2f}')} | "
            f"{fmt(r.get('ours_fp16_vs_cudnn_fp16'), '{:.2f}')}"
            f"{'' if r.get('ours_fp16_tensor_cores') else ' (FFMA)'} | "
            f"{fmt(r.get('ours_fp16_ffma_ms'))} | "
            f"{fmt(r.get('ours_fp16_ffma_vs_cudnn_fp16'), '{:.2f}')} | "
            f"{fmt(r.get('ours_gflops'), '{:.0f}')} | {fmt(r.get('ours_err'), '{:.1e}')} | "
            f"{fmt(r.get('ours_fp16_err'), '{:.1e}')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="cuda_zoo.json")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--layers", default="", help="comma-separated zoo names (default all)")
    parser.add_argument("--tuning-logs", default="",
                        help="a tuning database (tvm-deconv tune --work-dir): adds 'ours tuned'")
    parser.add_argument("--skip-tvm-default", action="store_true",
                        help="do not build or time TVM's default lowering")
    parser.add_argument("--skip-fp32", action="store_true",
                        help="fp16 only: skip ours fp32 and TVM's default (cuDNN still runs)")
    parser.add_argument("--skip-default-over-ms", type=float, default=500.0,
                        help="time TVM's default with one call only when one call is slower")
    parser.add_argument("--time-budget", type=float, default=2.0,
                        help="seconds of repeats per TVM timing (at least 3 repeats)")
    args = parser.parse_args(argv)
    dev = tvm.cuda(0)
    torch.backends.cudnn.allow_tf32 = False
    meta = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "tvm": tvm.__version__,
            "torch_vs_reference_err": check_torch_reference(),
            "timing": "TVM: VM time_evaluator median of repeats after warm-up; torch: CUDA "
                      "events median of 50 after 10 warm-ups; weights are constants"}
    print(json.dumps(meta), flush=True)
    names = [n for n in args.layers.split(",") if n] or [l.name for l in zoo.LAYERS]
    rows = []
    for name in names:
        for batch in (int(b) for b in args.batches.split(",")):
            t0 = time.perf_counter()
            row = bench(zoo.get(name), batch, dev, args.skip_default_over_ms, args.time_budget,
                        args.tuning_logs or None, args.skip_tvm_default, args.skip_fp32)
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table(rows))
    ok = args.skip_fp32 or all(r.get("ours_err", 1) < 1e-5 for r in rows)
    print("all ours fp32 within 1e-5 of float64 reference:", ok)
    ok16 = all(r.get(key + "_err", 1) < 2e-3 for r in rows
               for key in ("ours_fp16", "ours_fp16_ffma") if key + "_ms" in r)
    print("all ours fp16 within 2e-3 of the float64 result of the fp16 inputs:", ok16)
    for key in ("ours_fp16", "ours_fp16_ffma"):
        ratios = [r[key + "_vs_cudnn_fp16"] for r in rows if key + "_vs_cudnn_fp16" in r]
        if ratios:
            print(f"{key} ×cuDNN fp16: geomean "
                  f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f} over {len(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
