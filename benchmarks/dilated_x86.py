"""Dilated convs and graph mode on this CPU, side by side in one process (issue #8).

Dilated layers (``tvm_deconv.zoo.DILATED_LAYERS``): ours (``tvm_deconv.build``, the untangled
``x86.dilated`` kernel, weights packed at compile time), TVM's default lowering untuned
(``tvm.compile`` with the stock pipeline) and tuned (``ms.tune_tir`` on the legalized conv
PrimFunc, ``--trials`` trials), and PyTorch (oneDNN) on ``--threads`` threads.  Transposed
convs (``tvm_deconv.zoo.LAYERS``): ours fused (one decomposed PrimFunc) vs graph mode
(``mode="graph"``: ``prod(strides)`` stock convs + interleave).  Every output is checked
against the float64 reference before it is timed; medians of ``--repeat`` repeats.

    python benchmarks/dilated_x86.py --json benchmarks/results/x86-znver3-dilated.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import zoo
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_plan, make_plan
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

CONV = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}


def dilated_module(spec, weight: np.ndarray) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, spec.dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(CONV[spec.ndim](
                x, relax.const(weight), strides=spec.strides,
                padding=spec.pad_before + spec.pad_after, dilation=spec.dilation,
                groups=spec.groups, data_layout=spec.data_layout,
                kernel_layout=spec.kernel_layout))
        bb.emit_func_output(y)
    return bb.get()


def time_vm(ex, args, repeat: int, min_repeat_ms: float) -> tuple[np.ndarray, list[float]]:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    targs = [tvm.runtime.tensor(a) for a in args]
    out = vm["main"](*targs).numpy()
    res = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat,
                            min_repeat_ms=int(min_repeat_ms))(*targs)
    return out, [r * 1e3 for r in res.results]


def time_python(fn, repeat: int) -> list[float]:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def tvm_default_tuned(spec, data, weight, target, trials: int, repeat: int):
    """MetaSchedule on the legalized stock conv PrimFunc; (output, ms samples)."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    mod = relax.transform.LegalizeOps()(dilated_module(spec, weight))
    prims = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(prims) == 1, [gv.name_hint for gv, _ in prims]
    func = prims[0][1].with_attr("global_symbol", "main")
    with tempfile.TemporaryDirectory() as work_dir:
        database = ms.tune_tir(tvm.IRModule({"main": func}), target, work_dir,
                               max_trials_global=trials, num_trials_per_iter=min(trials, 8),
                               builder=ms.builder.LocalBuilder(timeout_sec=300),
                               runner=ms.runner.LocalRunner(timeout_sec=300))
        sch = ms.tir_integration.compile_tir(database, tvm.IRModule({"main": func}), target)
    if sch is None:
        return None, []
    lib = tvm.compile(sch.mod, target).jit()  # a PrimFunc Executable has no time_evaluator
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, spec.out_dtype))
    args = [tvm.runtime.tensor(data), tvm.runtime.tensor(weight), out]
    lib["main"](*args)
    res = lib.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)(*args)
    return out.numpy(), [r * 1e3 for r in res.results]


def torch_conv(spec, weight: np.ndarray, threads: int):
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads)
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}[spec.ndim]
    conv = cls(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.strides,
               padding=spec.pad_before, dilation=spec.dilation, groups=spec.groups, bias=False)
    conv.weight.data = torch.from_numpy(weight)
    conv.eval()
    return lambda x: conv(x)


def summary(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "repeats": len(samples)}


def bench_dilated(layer, args, target) -> dict:
    import torch  # pylint: disable=import-outside-toplevel

    spec = layer.spec(args.batch)
    data, weight = random_inputs(spec, seed=0)
    ref = dilated_conv_reference(data, weight, spec)
    plan = make_dilated_plan(spec)
    row = {"layer": layer.name, "batch": args.batch,
           "useful_gflop": 2 * plan.macs() / 1e9,
           "dilated_kernel_gflop": 2 * plan.dilated_kernel_macs() / 1e9}

    def record(name, out, samples):
        err = relative_error(out, ref) if out is not None else float("inf")
        row[name] = dict(summary(samples), rel_err=err) if samples else {"error": "no result"}
        if err > 1e-4:
            row[name]["wrong"] = True
        print(f"  {name:18s} {row[name].get('median_ms', float('nan')):10.3f} ms  "
              f"err {err:.1e}", flush=True)

    mod = dilated_module(spec, weight)
    ex = tvm_deconv.build(mod, target)
    record("ours", *time_vm(ex, [data], args.repeat, args.min_repeat_ms))
    fn = torch_conv(spec, weight, args.threads)
    xt = torch.from_numpy(data)
    with torch.no_grad():
        out = fn(xt).numpy()
        record("pytorch", out, time_python(lambda: fn(xt), args.repeat))
    if not args.skip_tvm_default:
        ex = tvm.compile(dilated_module(spec, weight), target)
        record("tvm_default", *time_vm(ex, [data], args.tvm_default_repeat, 0))
    if args.trials and layer.name in args.tune_layers:
        record("tvm_default_tuned", *tvm_default_tuned(spec, data, weight, target, args.trials,
                                                       args.tvm_default_repeat))
    ours = row["ours"]["median_ms"]
    for peer in ("pytorch", "tvm_default", "tvm_default_tuned"):
        if "median_ms" in row.get(peer, {}):
            row[f"speedup_vs_{peer}"] = row[peer]["median_ms"] / ours
    return row


def bench_graph_mode(layer, args, target) -> dict:
    spec = layer.spec(args.batch)
    data, weight = random_inputs(spec, seed=0)
    ref = conv_transpose_reference(data, weight, spec)
    row = {"layer": layer.name, "batch": args.batch,
           "phases": make_plan(spec).num_phases}
    for mode in ("fused", "graph"):
        mod = transposed_conv_module(spec, weight)
        ex = tvm_deconv.build(mod, target, mode=mode)
        out, samples = time_vm(ex, [data], args.repeat, args.min_repeat_ms)
        row[mode] = dict(summary(samples), rel_err=relative_error(out, ref))
        print(f"  {mode:6s} {row[mode]['median_ms']:10.3f} ms  err {row[mode]['rel_err']:.1e}",
              flush=True)
    row["fused_speedup_over_graph"] = row["graph"]["median_ms"] / row["fused"]["median_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", default="", help="dilated zoo layers (default: all)")
    parser.add_argument("--graph-layers", default="dcgan_512_256_k4s2,fsrcnn_x3_56_1_k9s3,"
                        "cyclegan_128_64_k3s2,unet_512_256_k2s2,fcn8s_21_21_k16s8,"
                        "hifigan_512_256_k16s8", help="transposed-conv zoo layers, fused vs "
                        "graph mode ('' to skip)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--min-repeat-ms", type=float, default=50.0)
    parser.add_argument("--tvm-default-repeat", type=int, default=1)
    parser.add_argument("--skip-tvm-default", action="store_true")
    parser.add_argument("--trials", type=int, default=16,
                        help="MetaSchedule trials for TVM's default (0: skip the tuned column)")
    parser.add_argument("--tune-layers", default="aspp_2048_256_k3d12,wavenet_64_128_k2d16",
                        help="dilated layers that get the tuned TVM-default column")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    args.tune_layers = set(filter(None, args.tune_layers.split(",")))
    target = tvm_deconv.resolve_target(args.target)
    names = set(filter(None, args.layers.split(",")))
    results = {"target": str(target), "threads": args.threads, "trials": args.trials,
               "dilated": [], "graph_mode": []}
    for layer in zoo.DILATED_LAYERS:
        if names and layer.name not in names:
            continue
        print(layer.name, flush=True)
        results["dilated"].append(bench_dilated(layer, args, target))
    for name in filter(None, args.graph_layers.split(",")):
        print(name, flush=True)
        results["graph_mode"].append(bench_graph_mode(zoo.get(name), args, target))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
