"""The main job: compile a DCGAN generator with and without tvm-deconv on this CPU, check the
outputs agree, and print the speedup."""

from __future__ import annotations

import argparse
import time

import numpy as np
import tvm
from tvm import relax

from .build import build
from .models import dcgan_generator
from .testing import relative_error
from .targets import resolve_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (median reported)")


def _median_ms(vm: relax.VirtualMachine, dev, arg, repeat: int) -> float:
    timer = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0)
    return timer(arg).median * 1e3


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args.target)
    dev = tvm.cuda(0) if "gpu" in target.keys else tvm.cpu(0)
    mod, params = dcgan_generator(batch=args.batch)
    z = np.random.default_rng(1).standard_normal((args.batch, 100, 1, 1)).astype("float32")
    print(f"DCGAN generator, batch {args.batch}, target {target.export().get('mcpu', '')} "
          f"{target.kind.name}")
    results = {}
    for label, decompose in (("TVM default", False), ("tvm-deconv", True)):
        start = time.perf_counter()
        ex = build(mod, target, params, decompose=decompose)
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(ex, dev)
        arg = tvm.runtime.tensor(z, dev)
        out = vm["main"](arg).numpy()
        # The default lowering is slow (seconds a run, 100x apart): one timed run is enough.
        ms = _median_ms(vm, dev, arg, args.repeat if decompose else 1)
        results[label] = (out, ms)
        print(f"  {label:12s} compile {compile_s:6.1f} s   run {ms:9.2f} ms")
    (ref, ref_ms), (out, ms) = results["TVM default"], results["tvm-deconv"]
    err = relative_error(out, ref)
    ok = err < 1e-5
    print(f"  outputs match: {'yes' if ok else 'NO'} (relative error {err:.2e})")
    print(f"  speedup of tvm-deconv over TVM's default: {ref_ms / ms:.1f}x")
    return 0 if ok else 1
