"""The two forms of the CUDA per-phase kernel, side by side (run on the device machine).

``packed_padded`` reads the packed weight (``decomposed_pack``) and a zero-padded input copy
inlined into the shared-memory staging; ``plain_guarded`` reads the weight as given and
bounds-checks every input read in the inner loop.  ``schedules/cuda.py`` picks between them
by output channels (``PACKED_MIN_OUT_CHANNELS``) from these numbers:

    source .dev/setup.sh && python3 benchmarks/cuda_forms_ab.py \\
        fsrcnn_x2_56_1_k9s2:1,fsrcnn_x3_56_1_k9s3:1,cyclegan_256_128_k3s2:64 --out $OUT/ab.json

Both forms are built through ``tvm_deconv.build`` (weights as constants), checked against a
float64 reference (torch on the GPU) and timed with the VM's time_evaluator; cuDNN fp32
(TF32 off) is timed in the same run.  Only layers with ragged phases (not phase-batched).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cuda_ab_common  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.compute import decomposed_conv_transpose, decomposed_pack  # noqa: E402
from tvm_deconv.schedules import cuda as cuda_sched  # noqa: E402
from tvm_deconv.testing import relative_error  # noqa: E402


def _form(packed: bool) -> dict:
    def compute(spec):
        return decomposed_conv_transpose(spec, packed_weight=packed).with_attr(
            "op_pattern", cuda_sched.OP_PATTERN_OPAQUE)
    return dict(compute=compute, pack=decomposed_pack if packed else None)


FORMS = {"plain_guarded": _form(False), "packed_padded": _form(True)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="comma-separated layer:batch, e.g. fsrcnn_x2_56_1_k9s2:1")
    parser.add_argument("--out", default="cuda_forms_ab.json")
    args = parser.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False
    dev = tvm.cuda(0)
    base = strategy.get("cuda.decomposed")
    rows = []
    for case in args.cases.split(","):
        name, batch = case.split(":")
        spec = zoo.get(name).spec(int(batch))
        if cuda_sched.uses_phase_batched_kernel(spec):
            raise SystemExit(f"{name}: runs the phase-batched kernel, no per-phase form")
        rng = np.random.default_rng(0)
        x = rng.standard_normal(spec.data_shape).astype("float32")
        w = rng.standard_normal(spec.weight_shape).astype("float32")
        xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        ref = cuda_ab_common.torch_conv(spec, xt.double(), wt.double()).cpu().numpy()
        row = {"layer": name, "batch": int(batch),
               "cudnn_fp32_ms": cuda_ab_common.time_cudnn(spec, xt, wt)}
        for form, fields in FORMS.items():
            strategy.register(strategy.CONV_TRANSPOSE, dataclasses.replace(base, **fields))
            ex = tvm_deconv.build(cuda_ab_common.one_layer(spec), "cuda", params={"w": w},
                                  tuning_logs=False)
            vm = relax.VirtualMachine(ex, dev)
            x_nd = tvm.runtime.tensor(x, dev)
            row[form + "_err"] = relative_error(vm["main"](x_nd).numpy(), ref)
            row[form + "_ms"] = cuda_ab_common.time_tvm(vm, dev, [x_nd], budget_s=1.0)[0]
        strategy.register(strategy.CONV_TRANSPOSE, base)
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print("| layer | N | cuDNN fp32 ms | plain_guarded ms | packed_padded ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['batch']} | {r['cudnn_fp32_ms']:.3f} | "
              f"{r['plain_guarded_ms']:.3f} | {r['packed_padded_ms']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
