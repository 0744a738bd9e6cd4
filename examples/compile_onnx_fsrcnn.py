"""Compile an ONNX FSRCNN (super-resolution, 9×9 stride-s deconv) with tvm-deconv; compare
with onnxruntime (if installed), PyTorch eager and TVM's default lowering.

    python examples/compile_onnx_fsrcnn.py [--scale 3] [--size 64] [--onnx out.onnx]

Needs torch (to write the ONNX file) and onnx.
"""

import argparse
import time

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import tvm_deconv
from tvm_deconv.importers import fold_onnx_constants, run_torch, to_onnx
from tvm_deconv.models import build_model
from tvm_deconv.testing import relative_error


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=3, choices=(2, 3, 4))
    parser.add_argument("--size", type=int, default=64, help="input height = width")
    parser.add_argument("--onnx", help="also write the ONNX file here")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    bundle = build_model(f"fsrcnn_x{args.scale}", size=args.size)   # FSRCNN(56, 12, 4)
    onnx_bytes = to_onnx(bundle)
    if args.onnx:
        with open(args.onnx, "wb") as f:
            f.write(onnx_bytes)
    (x,) = bundle.random_inputs(seed=7)
    ref = run_torch(bundle, [x], float64=True)  # the exact answer

    # Any ONNX file works the same way: load → from_onnx → tvm_deconv.build.
    model = fold_onnx_constants(onnx.load_from_string(onnx_bytes))
    mod = from_onnx(model, shape_dict={"x": list(x.shape)}, keep_params_in_input=False)

    rows = []
    try:
        import onnxruntime as ort
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        out = session.run(None, {"x": x})[0]
        start = time.perf_counter()
        for _ in range(args.repeat):
            session.run(None, {"x": x})
        rows.append(("onnxruntime", "-", (time.perf_counter() - start) / args.repeat * 1e3,
                     relative_error(out, ref)))
    except ImportError:
        print("(onnxruntime not installed: skipped)")
    dev = tvm.cpu()
    for label, decompose in (("TVM default", False), ("tvm-deconv", True)):
        start = time.perf_counter()
        ex = tvm_deconv.build(mod, "llvm", decompose=decompose)
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(ex, dev)
        arg = tvm.runtime.tensor(x, dev)
        out = vm["main"](arg).numpy()
        ms = vm.time_evaluator("main", dev, number=1, repeat=args.repeat)(arg).median * 1e3
        rows.append((label, f"{compile_s:.1f}", ms, relative_error(out, ref)))

    print(f"FSRCNN x{args.scale} from ONNX, input {tuple(x.shape)} -> output {ref.shape}")
    print(f"{'runtime':15s} {'compile s':>9s} {'run ms':>9s} {'rel. err vs float64':>20s}")
    for label, compile_s, ms, err in rows:
        print(f"{label:15s} {compile_s:>9s} {ms:9.2f} {err:20.1e}")
    ok = all(err < 1e-5 for *_, err in rows)
    print("outputs match:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
