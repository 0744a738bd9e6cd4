"""Stride-1 convs on x86: routed to the transposed-conv kernel (``ConvAsTransposedConv``) or
not (the dilated/ordinary-conv kernel, or TVM's default where that declines), side by side
with ONNX Runtime.  Both builds are checked against each other and the float64 reference:

    python benchmarks/x86_conv_route_ab.py --json benchmarks/results/x86-znver3-conv-route.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
import tvm_deconv.conv_as_transposed as routing
from tvm_deconv.bench import _one_op_module, _onnx_single_node, ort_prepared
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_spec
from tvm_deconv.testing import relative_error

# (in, out, size, kernel, padding): CycleGAN's stem and head (256x256), FSRCNN's convs (128x128)
CONVS = ((3, 64, 256, 7, 3), (64, 3, 256, 7, 3), (1, 56, 128, 5, 2), (56, 12, 128, 1, 0),
         (12, 12, 128, 3, 1), (12, 56, 128, 1, 0))


def run(cin: int, cout: int, size: int, k: int, pad: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, cin, size, size)).astype("float32")
    w = rng.standard_normal((cout, cin, k, k)).astype("float32")
    mod = _one_op_module(relax.op.nn.conv2d, x.shape, w.shape, "float32", padding=pad)
    ref = dilated_conv_reference(x, w, make_dilated_spec(x.shape, w.shape, padding=pad))
    dev = tvm.cpu()
    data = tvm.runtime.tensor(x, dev)
    row, vms, cap = {"conv": f"{cin}->{cout} k{k} p{pad} {size}x{size}"}, {}, routing.MAX_OUT_CHANNELS
    for name, limit in (("routed", cap), ("not_routed", 0)):
        routing.MAX_OUT_CHANNELS = limit
        vms[name] = relax.VirtualMachine(tvm_deconv.build(mod, "llvm", {"w": w},
                                                          tuning_logs=False), dev)
        row[f"{name}_err"] = relative_error(vms[name]["main"](data).numpy(), ref)
    routing.MAX_OUT_CHANNELS = cap
    out = (1, cout, size + 2 * pad - k + 1, size + 2 * pad - k + 1)
    ort = ort_prepared(_onnx_single_node("Conv", x.shape, out, w, pads=[pad] * 4,
                                         kernel_shape=[k, k]), {"x": x}, 2)
    samples = {name: [] for name in list(vms) + ["onnxruntime"]}
    for _ in range(rounds):  # round-robin
        for name, vm in vms.items():
            time.sleep(0.2)
            timer = vm.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=20)
            samples[name].append(float(np.median(timer(data).results)) * 1e3)
        time.sleep(0.2)
        samples["onnxruntime"].append(float(np.median(ort.timer(3, 20))))
    row.update({f"{name}_ms": float(np.median(v)) for name, v in samples.items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [run(*conv, args.rounds) for conv in CONVS]
    print("| conv | routed ms | not routed ms | ONNX Runtime ms | routed vs not | max rel. error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['conv']} | {r['routed_ms']:.3f} | {r['not_routed_ms']:.3f} | "
              f"{r['onnxruntime_ms']:.3f} | {r['not_routed_ms'] / r['routed_ms']:.2f}x | "
              f"{max(r['routed_err'], r['not_routed_err']):.1e} |")
    assert all(max(r["routed_err"], r["not_routed_err"]) < 1e-5 for r in rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
