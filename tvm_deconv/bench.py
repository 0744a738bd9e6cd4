"""``tvm-deconv bench``: the zoo layers side by side in one process.

Columns per layer and batch: milliseconds (median of repeats, with the min–max spread) of
tvm-deconv untuned, TVM's default lowering untuned (slow: capped repeats), ONNX Runtime and
PyTorch (when importable), useful GFLOP/s (``plan.useful_flops()``), the speedup of ours over
the best peer (ORT/PyTorch), and our extra workspace bytes.  Every implementation's output is
checked against the float64 reference first; a wrong kernel is reported as such, never timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from typing import Callable, Optional

from . import zoo
from .plan import ConvTransposeSpec, make_plan
from .testing import conv_transpose_reference, random_inputs, relative_error, tolerance

logger = logging.getLogger("tvm_deconv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    parser.add_argument("--layers", default="", help="comma-separated zoo layer names "
                        "(default: all); known: " + ", ".join(l.name for l in zoo.LAYERS))
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=15, help="timed repeats (median reported)")
    parser.add_argument("--min-repeat-ms", type=float, default=20.0,
                        help="each repeat runs the kernel enough times to last this long")
    parser.add_argument("--tvm-default-repeat", type=int, default=3,
                        help="repeats for TVM's (very slow) default lowering")
    parser.add_argument("--skip-tvm-default", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for ORT/PyTorch (default: the target's num-cores)")
    parser.add_argument("--json", default="", help="write the results to this JSON file")


# --------------------------------------------------------------------------------------------
# Timing helpers: every runner returns per-repeat milliseconds.


def _time_python(fn: Callable[[], object], repeat: int, min_repeat_ms: float) -> list[float]:
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_repeat_ms / 1e3 / once))
    results = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - start) / number * 1e3)
    return results


def _time_vm(vm, dev, args, repeat: int, min_repeat_ms: float) -> list[float]:
    timer = vm.time_evaluator("main", dev, number=1, repeat=repeat,
                              min_repeat_ms=int(min_repeat_ms))
    return [r * 1e3 for r in timer(*args).results]


def _summary(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "repeats": len(samples)}


# --------------------------------------------------------------------------------------------
# Runners: (output array, per-repeat ms) or raise.


def _relax_module(spec: ConvTransposeSpec):
    from tvm import relax  # pylint: disable=import-outside-toplevel

    op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
          3: relax.op.nn.conv3d_transpose}[spec.ndim]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, spec.dtype))
    w = relax.Var("w", relax.TensorType(spec.weight_shape, spec.dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(op(x, w, strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                           output_padding=spec.output_padding, dilation=spec.dilation,
                           groups=spec.groups, data_layout=spec.data_layout,
                           kernel_layout=spec.kernel_layout, out_layout=spec.out_layout))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _run_tvm(spec, data, weight, target, decompose, repeat, min_repeat_ms):
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from .build import build  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    ex = build(_relax_module(spec), target, {"w": weight}, decompose=decompose)
    compile_s = time.perf_counter() - start
    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(ex, dev)
    arg = tvm.runtime.tensor(data, dev)
    out = vm["main"](arg).numpy()
    return out, (lambda: _time_vm(vm, dev, [arg], repeat, min_repeat_ms)), compile_s


def _run_ort(spec, data, weight, threads, repeat, min_repeat_ms):
    import onnx  # pylint: disable=import-outside-toplevel
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    if spec.data_layout != "NC" + spec.spatial_axes:
        raise RuntimeError("ONNX ConvTranspose is channels-first only")
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], strides=list(spec.strides),
        pads=list(spec.pad_before) + list(spec.pad_after), dilations=list(spec.dilation),
        output_padding=list(spec.output_padding), group=spec.groups,
        kernel_shape=list(spec.kernel))
    graph = helper.make_graph(
        [node], "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, spec.data_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec.out_shape)],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": data})[0]
    return out, (lambda: _time_python(lambda: sess.run(None, {"x": data}), repeat,
                                      min_repeat_ms)), 0.0


def _run_torch(spec, data, weight, threads, repeat, min_repeat_ms):
    import torch  # pylint: disable=import-outside-toplevel

    if spec.data_layout != "NC" + spec.spatial_axes:
        raise RuntimeError("PyTorch conv_transpose is channels-first only")
    torch.set_num_threads(threads)
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[spec.ndim]
    if spec.pad_before != spec.pad_after:
        raise RuntimeError("PyTorch takes symmetric padding only")
    x, w = torch.from_numpy(data), torch.from_numpy(weight)
    kwargs = dict(stride=spec.strides, padding=spec.pad_before,
                  output_padding=spec.output_padding, groups=spec.groups, dilation=spec.dilation)

    def call():
        with torch.inference_mode():
            return fn(x, w, **kwargs)

    out = call().numpy()
    return out, (lambda: _time_python(call, repeat, min_repeat_ms)), 0.0


# --------------------------------------------------------------------------------------------


def _workspace(spec, target) -> Optional[int]:
    from . import strategy  # pylint: disable=import-outside-toplevel

    impl = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation
    if impl is None:
        return None
    if impl.name == "x86.decomposed":
        from .schedules.x86 import vector_lanes, workspace_bytes  # pylint: disable=import-outside-toplevel

        return workspace_bytes(spec, vector_lanes(target, spec.dtype))
    return 0


def bench_layer(layer, batch, args, target, threads) -> dict:
    spec = layer.spec(batch)
    plan = make_plan(spec)
    data, weight = random_inputs(spec, seed=batch)
    ref = conv_transpose_reference(data, weight, spec)
    tol = tolerance(spec.dtype)
    row = {"layer": layer.name, "batch": batch, "useful_gflop": plan.useful_flops() / 1e9,
           "impls": {}}
    runners = [("ours", lambda: _run_tvm(spec, data, weight, target, True, args.repeat,
                                         args.min_repeat_ms))]
    if not args.skip_tvm_default:
        runners.append(("tvm_default", lambda: _run_tvm(
            spec, data, weight, target, False, args.tvm_default_repeat, 0.0)))
    if not args.skip_ort:
        runners.append(("onnxruntime", lambda: _run_ort(spec, data, weight, threads,
                                                         args.repeat, args.min_repeat_ms)))
    if not args.skip_torch:
        runners.append(("pytorch", lambda: _run_torch(spec, data, weight, threads,
                                                      args.repeat, args.min_repeat_ms)))
    for name, runner in runners:
        entry: dict = {}
        try:
            out, timer, compile_s = runner()
            err = relative_error(out, ref)
            entry["rel_error"] = err
            if compile_s:
                entry["compile_s"] = compile_s
            if not err < tol:
                entry["error"] = f"WRONG RESULT (relative error {err:.2e} >= {tol:.0e})"
            else:
                entry.update(_summary(timer()))
                entry["gflops"] = plan.useful_flops() / (entry["median_ms"] * 1e6)
        except ImportError as exc:
            entry["error"] = f"not available ({exc})"
        except Exception as exc:  # pylint: disable=broad-except
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        row["impls"][name] = entry
    peers = [row["impls"][p]["median_ms"] for p in ("onnxruntime", "pytorch")
             if "median_ms" in row["impls"].get(p, {})]
    ours = row["impls"]["ours"].get("median_ms")
    row["best_peer_ms"] = min(peers) if peers else None
    row["speedup_vs_best_peer"] = (min(peers) / ours) if peers and ours else None
    row["workspace_bytes"] = _workspace(spec, target)
    return row


def _fmt_ms(entry: dict) -> str:
    if "median_ms" not in entry:
        return "n/a" if "not available" in entry.get("error", "") or not entry else "FAIL"
    med, lo, hi = entry["median_ms"], entry["min_ms"], entry["max_ms"]
    spread = (hi - lo) / med * 100 if med else 0.0
    return f"{med:.3f} (±{spread / 2:.0f}%)"


def markdown_table(rows: list[dict], impls: list[str]) -> str:
    head = (["layer", "N"] + [f"{i} ms" for i in impls]
            + ["ours GFLOP/s", "speedup vs best peer", "workspace KiB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ours = row["impls"].get("ours", {})
        sp = row["speedup_vs_best_peer"]
        ws = row["workspace_bytes"]
        cells = [row["layer"], str(row["batch"])]
        cells += [_fmt_ms(row["impls"].get(i, {})) for i in impls]
        cells += [f"{ours['gflops']:.1f}" if "gflops" in ours else "-",
                  f"{sp:.2f}x" if sp else "-",
                  f"{ws / 1024:.0f}" if ws is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .targets import resolve_target  # pylint: disable=import-outside-toplevel

    target = resolve_target(args.target)
    if "gpu" in target.keys:
        print("bench: CPU targets only for now")
        return 2
    threads = args.threads or int(target.attrs.get("num-cores", 0) or 0) or 1
    names = [n for n in args.layers.split(",") if n] or [l.name for l in zoo.LAYERS]
    batches = [int(b) for b in args.batch.split(",") if b]
    impls = ["ours"] + ([] if args.skip_tvm_default else ["tvm_default"]) + (
        [] if args.skip_ort else ["onnxruntime"]) + ([] if args.skip_torch else ["pytorch"])
    print(f"target {target}; ORT/PyTorch threads: {threads}; TVM threads: "
          f"{os.environ.get('TVM_NUM_THREADS', 'default (one per core)')}")
    rows, bad = [], 0
    for name in names:
        layer = zoo.get(name)
        for batch in batches:
            row = bench_layer(layer, batch, args, target, threads)
            rows.append(row)
            for impl, entry in row["impls"].items():
                if "error" in entry and "not available" not in entry["error"]:
                    print(f"  {name} N={batch} {impl}: {entry['error']}")
                    bad += impl == "ours"
            print(f"  {name} N={batch}: " + ", ".join(
                f"{i} {_fmt_ms(e)}" for i, e in row["impls"].items()), flush=True)
    print()
    print(markdown_table(rows, impls))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"target": str(target), "threads": threads, "rows": rows}, fh, indent=1)
        print(f"\nwrote {args.json}")
    return 1 if bad else 0
