"""Register-tile storage scope on x86, side by side: "global" (stack) vs "local" (workspace).

TVM's LowerTVMBuiltin puts only "global" allocations under 1 KiB on the stack; a "local"
register tile allocated inside the parallel loop becomes a TVMBackendAllocWorkspace /
FreeWorkspace call pair per tile.  This builds every layer twice, once per scope of
``schedules.common.CPU_TILE_SCOPE`` (the transposed-conv and the dilated/ordinary-conv
kernels), checks both against the float64 reference and times them round-robin:

    python benchmarks/x86_tile_scope_ab.py --layers unet_512_256_k2s2,cyclegan_128_64_k3s2 \\
        --dilated wavenet_64_128_k2d2 --json benchmarks/results/x86-znver3-tile-scope.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import zoo
from tvm_deconv.bench import _one_op_module
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.schedules import x86, x86_dilated, x86_space
from tvm_deconv.testing import conv_transpose_reference, random_inputs, relative_error

SCOPES = ("local", "global")


def _set_scope(scope: str) -> None:
    for module in (x86, x86_dilated, x86_space):
        module.CPU_TILE_SCOPE = scope


def _case(name: str, dilated: bool):
    layer = zoo.get_dilated(name) if dilated else zoo.get(name)
    spec = layer.spec(1)
    rng = np.random.default_rng(0)
    data = rng.standard_normal(spec.data_shape).astype("float32")
    weight = rng.standard_normal(spec.weight_shape).astype("float32")
    if dilated:
        op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d}[spec.ndim]
        mod = _one_op_module(op, spec.data_shape, spec.weight_shape, "float32",
                             padding=layer.padding, dilation=layer.dilation)
        return mod, data, weight, lambda: dilated_conv_reference(data, weight, spec)
    data, weight = random_inputs(spec, seed=0)
    op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
          3: relax.op.nn.conv3d_transpose}[spec.ndim]
    mod = _one_op_module(op, spec.data_shape, spec.weight_shape, "float32",
                         strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                         output_padding=spec.output_padding)
    return mod, data, weight, lambda: conv_transpose_reference(data, weight, spec)


def run(name: str, dilated: bool, rounds: int) -> dict:
    mod, data, weight, reference = _case(name, dilated)
    dev = tvm.cpu()
    x = tvm.runtime.tensor(data, dev)
    ref = reference()
    vms, row = {}, {"layer": name}
    for scope in SCOPES:
        _set_scope(scope)
        vm = relax.VirtualMachine(tvm_deconv.build(mod, "llvm", {"w": weight},
                                                   tuning_logs=False), dev)
        row[f"{scope}_err"] = relative_error(vm["main"](x).numpy(), ref)
        vms[scope] = vm
    _set_scope("global")
    samples = {scope: [] for scope in SCOPES}
    for _ in range(rounds):  # round-robin: both see the same machine load
        for scope, vm in vms.items():
            time.sleep(0.25)  # park the other build's spinning thread pool
            timer = vm.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=20)
            samples[scope].append(float(np.median(timer(x).results)) * 1e3)
    for scope in SCOPES:
        row[f"{scope}_ms"] = float(np.median(samples[scope]))
    row["global_vs_local"] = row["local_ms"] / row["global_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="unet_512_256_k2s2,cyclegan_128_64_k3s2",
                        help="transposed-conv zoo layers")
    parser.add_argument("--dilated", default="wavenet_64_128_k2d2", help="dilated zoo layers")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [run(n, False, args.rounds) for n in args.layers.split(",") if n]
    rows += [run(n, True, args.rounds) for n in args.dilated.split(",") if n]
    print("| layer | local ms | global ms | global vs local | max rel. error |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['local_ms']:.3f} | {r['global_ms']:.3f} | "
              f"{r['global_vs_local']:.2f}x | {max(r['local_err'], r['global_err']):.1e} |")
    assert all(max(r["local_err"], r["global_err"]) < 1e-5 for r in rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
