"""A CUDA rule switched on and off, side by side, per layer (device).

    source .dev/setup.sh && python3 benchmarks/cuda_switch_ab.py single_pixel \\
        dcgan_100_512_k4s1:1,dcgan_100_512_k4s1:64 --out $OUT/single-pixel-ab.json
    source .dev/setup.sh && python3 benchmarks/cuda_switch_ab.py split_k \\
        pose_2048_256_k4s2:1,dcgan_512_256_k4s2:1 --out $OUT/split-k-ab.json

Switches: ``single_pixel`` (1-pixel inputs as a dlight GEMM / GEMV, ``gpu.single_pixel``; off:
the implicit GEMM ``cuda.decomposed``), ``split_k`` (the phase-batched kernel's input-channel
slices, :func:`~tvm_deconv.schedules.cuda.split_k`; off: one slice), both shipped on, and
``padded_taps`` (ragged layers as phase-batched ones with zero taps, ``cuda.padded_taps``,
shipped for float16 only: on here is float32 through it; off: the per-phase kernels).  Per case
``layer:batch``: ``on`` and ``off``, TVM's default lowering, and cuDNN fp32 (TF32 off) through
torch, all float32, in one process.  Every TVM output is checked against torch float64 first
(``cuda_ab_common.build_check_time``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cuda_ab_common  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.schedules import cuda as cuda_sched  # noqa: E402
from tvm_deconv.schedules import cuda_padded_taps  # noqa: E402
from tvm_deconv.testing import relative_error  # noqa: E402


def single_pixel_off():
    return strategy.declining(strategy.CONV_TRANSPOSE, "gpu.single_pixel")


@contextlib.contextmanager
def split_k_off():
    shipped = cuda_sched.split_k
    cuda_sched.split_k = lambda spec, num_sms=132: 1
    try:
        yield
    finally:
        cuda_sched.split_k = shipped


@contextlib.contextmanager
def padded_taps_float32_on():
    shipped = cuda_padded_taps.PADDED_TAPS_DTYPES
    cuda_padded_taps.PADDED_TAPS_DTYPES = shipped + ("float32",)
    try:
        yield
    finally:
        cuda_padded_taps.PADDED_TAPS_DTYPES = shipped


# name: (the context that flips the rule, whether it is shipped on for these float32 cases)
SWITCHES = {"single_pixel": (single_pixel_off, True), "split_k": (split_k_off, True),
            "padded_taps": (padded_taps_float32_on, False)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("switch", choices=sorted(SWITCHES))
    parser.add_argument("cases", help="comma-separated layer:batch")
    parser.add_argument("--out", default="cuda_switch_ab.json")
    args = parser.parse_args(argv)
    dev, rows = tvm.cuda(0), []
    for case in args.cases.split(","):
        name, batch = case.split(":")
        spec = zoo.get(name).spec(int(batch))
        x, w, xt, wt, ref = cuda_ab_common.random_case(spec)
        row = {"switch": args.switch, "layer": name, "batch": int(batch),
               "picked": strategy.select(strategy.CONV_TRANSPOSE, spec,
                                         tvm_deconv.resolve_target("cuda")).implementation.name,
               "split_k": cuda_sched.split_k(spec)}
        flip, shipped_on = SWITCHES[args.switch]
        for key in ("on", "off"):
            with flip() if (key == "on") != shipped_on else contextlib.nullcontext():
                cuda_ab_common.build_check_time(row, key, spec, x, w, ref, dev, budget_s=0.5)
        ex = tvm_deconv.build(cuda_ab_common.one_layer(spec), "cuda", params={"w": w},
                              decompose=False)
        vm, x_nd = relax.VirtualMachine(ex, dev), tvm.runtime.tensor(x, dev)
        row["tvm_default_err"] = relative_error(vm["main"](x_nd).numpy(), ref)
        row["tvm_default_ms"] = cuda_ab_common.time_tvm(vm, dev, [x_nd], 0.5)[0]
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            row["cudnn_fp32_ms"] = cuda_ab_common.time_cudnn(spec, xt, wt)
        for key in ("off", "tvm_default", "cudnn_fp32"):
            if "on_ms" in row and key + "_ms" in row:
                row["on_vs_" + key] = row[key + "_ms"] / row["on_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
