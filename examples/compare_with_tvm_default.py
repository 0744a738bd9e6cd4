"""Build zoo models with tvm-deconv and with TVM's default lowering; print compile time, run
time and the relative error between the two.  No torch needed.

    python examples/compare_with_tvm_default.py                      # small sizes, < 1 min
    python examples/compare_with_tvm_default.py --models dcgan fsrcnn_x3 --full

``--full`` uses the published sizes (slow to compile and run on 2 cores; fcn8s_head's
16×16 stride-8 deconv takes minutes to compile with tvm-deconv).
"""

import argparse
import time

import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.models import MODELS, build_model
from tvm_deconv.testing import relative_error

QUICK = ["dcgan", "fsrcnn_x2", "fsrcnn_x3", "simplebaseline_head", "cyclegan_resnet",
         "unet3d_decoder"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=QUICK, choices=list(MODELS))
    parser.add_argument("--full", action="store_true", help="published sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    dev = tvm.cpu()
    print(f"{'model':20s} {'output':>18s} {'compile s (default/ours)':>25s} "
          f"{'run ms (default/ours)':>22s} {'speedup':>8s} {'rel. err':>9s}")
    worst = 0.0
    for name in args.models:
        bundle = build_model(name, small=not args.full)
        inputs = [tvm.runtime.tensor(a, dev) for a in bundle.random_inputs()]
        results = []
        for decompose in (False, True):
            start = time.perf_counter()
            ex = tvm_deconv.build(bundle.mod, "llvm", bundle.params, decompose=decompose)
            compile_s = time.perf_counter() - start
            vm = relax.VirtualMachine(ex, dev)
            out = vm["main"](*inputs).numpy()
            ms = vm.time_evaluator("main", dev, number=1, repeat=args.repeat)(*inputs).median
            results.append((out, compile_s, ms * 1e3))
        (ref, c0, t0), (out, c1, t1) = results
        err = relative_error(out, ref)
        worst = max(worst, err)
        print(f"{name:20s} {str(out.shape):>18s} {c0:11.1f} / {c1:<11.1f} "
              f"{t0:10.2f} / {t1:<9.2f} {t0 / t1:7.1f}x {err:9.1e}")
    print("all outputs match TVM's default:", "yes" if worst < 1e-5 else "NO")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
