"""Compile a PyTorch DCGAN generator with tvm-deconv; compare with PyTorch eager and with
TVM's default lowering of the same imported model.

    python examples/compile_pytorch_dcgan.py [--ngf 64] [--batch 1]

Needs torch. Small by default (ngf 16) so it runs in well under a minute on 2 cores.
"""

import argparse
import time

import numpy as np
import torch
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.importers import from_pytorch, run_torch
from tvm_deconv.models import build_model
from tvm_deconv.testing import relative_error


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=16, help="generator width (paper: 64)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch intra-op threads (on a busy 2-core machine more than 1 "
                             "made eager 40x slower here: spinning threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    # The same architecture and weights as the relax.frontend.nn zoo model, as torch.nn.
    bundle = build_model("dcgan", batch=args.batch, ngf=args.ngf)
    model = bundle.torch_module()
    (z,) = bundle.random_inputs(seed=7)

    ref = run_torch(bundle, [z], model, float64=True)  # the exact answer
    with torch.no_grad():
        eager = model(torch.from_numpy(z)).numpy()        # also the warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            model(torch.from_numpy(z))
            times.append(time.perf_counter() - start)
        torch_ms = float(np.median(times)) * 1e3

    mod, params = from_pytorch(bundle, model)        # torch.export → Relax
    dev = tvm.cpu()
    rows = [("PyTorch eager", "-", torch_ms, relative_error(eager, ref))]
    for label, decompose in (("TVM default", False), ("tvm-deconv", True)):
        start = time.perf_counter()
        ex = tvm_deconv.build(mod, "llvm", params, decompose=decompose)
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(ex, dev)
        arg = tvm.runtime.tensor(z, dev)
        out = vm["main"](arg).numpy()
        ms = vm.time_evaluator("main", dev, number=1, repeat=args.repeat)(arg).median * 1e3
        rows.append((label, f"{compile_s:.1f}", ms, relative_error(out, ref)))

    print(f"DCGAN generator (ngf {args.ngf}, batch {args.batch}) imported from PyTorch")
    print(f"{'route':15s} {'compile s':>9s} {'run ms':>9s} {'rel. err vs float64':>20s}")
    for label, compile_s, ms, err in rows:
        print(f"{label:15s} {compile_s:>9s} {ms:9.2f} {err:20.1e}")
    ok = all(err < 1e-5 for *_, err in rows[1:])  # TVM's routes; PyTorch's is for reference
    print("outputs match:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
