"""Tune a zoo layer with MetaSchedule, build with the log, check it against float64.

tvm_deconv.tuning.tune, then tvm_deconv.build(..., tuning_logs=DIR), compared with the
untuned build.

    python examples/tune_layer.py                                      # 16 trials
    python examples/tune_layer.py --layer fsrcnn_x3_56_1_k9s3 --trials 64 --work-dir tuned/

The log in --work-dir is what `tvm_deconv.build(..., tuning_logs=DIR)` reads; re-running with
the same --work-dir resumes (only the remaining trials run).  On a 2-core machine one trial
costs about 5-11 s.  No torch needed.
"""

import argparse
import time

import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import zoo
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                tolerance, transposed_conv_module)
from tvm_deconv.tuning import SPACES, make_tasks, results_table, tune


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="dcgan_256_128_k4s2",
                        choices=[layer.name for layer in zoo.LAYERS])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--trials", type=int, default=16, help="trials per design space")
    parser.add_argument("--spaces", default=",".join(SPACES),
                        help=f"design spaces to tune (default: all of {', '.join(SPACES)})")
    parser.add_argument("--work-dir", default="tuned-example", help="the tuning log")
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    target = tvm_deconv.resolve_target(args.target)
    spec = zoo.get(args.layer).spec(args.batch)
    spaces = [s for s in args.spaces.split(",") if s]
    results = tune(make_tasks([spec], target, spaces), target, args.work_dir, trials=args.trials)
    print(results_table(results))

    data, weight = random_inputs(spec, seed=3)
    ref = conv_transpose_reference(data, weight, spec)
    mod = transposed_conv_module(spec)                       # main(x, w)
    dev = tvm.cpu()
    rows = []
    for label, logs in (("untuned", False), ("tuned", args.work_dir)):
        start = time.perf_counter()
        ex = tvm_deconv.build(mod, target, {"w": weight}, tuning_logs=logs)
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(ex, dev)
        x = tvm.runtime.tensor(data, dev)
        err = relative_error(vm["main"](x).numpy(), ref)
        ms = vm.time_evaluator("main", dev, number=1, repeat=args.repeat)(x).median * 1e3
        rows.append((label, compile_s, ms, err))

    print(f"\n{args.layer}, batch {args.batch}, {args.trials} trials per space")
    print(f"{'build':10s} {'compile s':>9s} {'run ms':>9s} {'rel. err vs float64':>20s}")
    for label, compile_s, ms, err in rows:
        print(f"{label:10s} {compile_s:9.1f} {ms:9.3f} {err:20.1e}")
    ok = all(err < tolerance(spec.dtype) for *_, err in rows)
    print("outputs match the reference:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
