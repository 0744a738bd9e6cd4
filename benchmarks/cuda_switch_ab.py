"""A CUDA rule switched on and off, side by side, per layer (device).

    source .dev/setup.sh && python3 benchmarks/cuda_switch_ab.py single_pixel \\
        dcgan_100_512_k4s1:1,dcgan_100_512_k4s1:64 --dtype float16 --out $OUT/single-pixel-ab.json
    source .dev/setup.sh && python3 benchmarks/cuda_switch_ab.py split_k \\
        pose_2048_256_k4s2:1,dcgan_512_256_k4s2:1 --out $OUT/split-k-ab.json

Switches (``on`` / ``off``): ``single_pixel`` (1-pixel inputs as a dlight GEMM / GEMV,
``gpu.single_pixel`` / the implicit GEMM ``cuda.decomposed``), ``split_k`` (the phase-batched
FFMA kernel's input-channel slices, :func:`~tvm_deconv.schedules.cuda.split_k` / one slice),
``padded_taps`` (ragged layers as phase-batched ones with zero taps, ``cuda.padded_taps`` at
any batch / the per-phase kernels) and ``split_k_over_tensor_cores`` (float16 with many
split-K slices on the split FFMA kernel / on the tensor cores,
:data:`~tvm_deconv.schedules.cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES`). Per case
``layer:batch``, in ``--dtype``: ``on`` and ``off``, TVM's default lowering, and cuDNN (TF32
off, benchmark mode) through torch, in one process; ``shipped`` names what the package picks.
Every TVM output is checked against torch float64 first (``cuda_ab_common.build_check_time``).
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

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.schedules import cuda as cuda_sched  # noqa: E402
from tvm_deconv.schedules import cuda_padded_taps, cuda_tensorcore  # noqa: E402


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
def padded_taps_any_batch():
    shipped = cuda_padded_taps.PADDED_TAPS_MAX_BATCH
    cuda_padded_taps.PADDED_TAPS_MAX_BATCH = dict.fromkeys(shipped)
    try:
        yield
    finally:
        cuda_padded_taps.PADDED_TAPS_MAX_BATCH = shipped


def padded_taps_off():
    return strategy.declining(strategy.CONV_TRANSPOSE, "cuda.padded_taps")


@contextlib.contextmanager
def tensor_cores_over_split_k():
    shipped = cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES
    cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES = 1 << 30
    try:
        yield
    finally:
        cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES = shipped


# name: (the context that turns the rule on, the one that turns it off) for these cases
SWITCHES = {
    "single_pixel": (contextlib.nullcontext, single_pixel_off),
    "split_k": (contextlib.nullcontext, split_k_off),
    "padded_taps": (padded_taps_any_batch, padded_taps_off),
    "split_k_over_tensor_cores": (contextlib.nullcontext, tensor_cores_over_split_k),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("switch", choices=sorted(SWITCHES))
    parser.add_argument("cases", help="comma-separated layer:batch")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--no-tvm-default", action="store_true")
    parser.add_argument("--out", default="cuda_switch_ab.json")
    args = parser.parse_args(argv)
    dev, target, rows = tvm.cuda(0), tvm_deconv.resolve_target("cuda"), []
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    for case in args.cases.split(","):
        name, batch = case.split(":")
        spec = zoo.get(name).spec(int(batch), dtype=args.dtype)
        x, w, xt, wt, ref = cuda_ab_common.random_case(spec)
        def picked():
            return strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation.name

        row = {"switch": args.switch, "layer": name, "batch": int(batch), "dtype": args.dtype,
               "shipped": picked(), "split_k": cuda_sched.split_k(spec)}
        for key, turn in zip(("on", "off"), SWITCHES[args.switch]):
            with turn():
                row[key + "_picked"] = picked()
                cuda_ab_common.build_check_time(row, key, spec, x, w, ref, dev, budget_s=0.5)
        if not args.no_tvm_default:
            cuda_ab_common.build_check_time(row, "tvm_default", spec, x, w, ref, dev,
                                            budget_s=0.5, decompose=False)
        with torch.no_grad():
            row["cudnn_ms"] = cuda_ab_common.time_cudnn(spec, xt, wt)
        for key in ("off", "tvm_default", "cudnn"):
            if "on_ms" in row and key + "_ms" in row:
                row["on_vs_" + key] = row[key + "_ms"] / row["on_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
