"""Tensor-core (fp16) schedule variants side by side, per layer (device).

    source .dev/setup.sh && python3 benchmarks/cuda_tc_variants_ab.py \\
        pose_2048_256_k4s2:64,unet_512_256_k2s2:64 --out $OUT/tc-variants-ab.json

Per case ``layer:batch``, in one process: ours float16 built with each variant of
:data:`VARIANTS` (a context that sets :mod:`~tvm_deconv.schedules.cuda_tensorcore`'s
``K_PIPELINE`` / ``X_GATHER`` knobs and the build's ``PassContext``), with ``--tiles
wp.wo.fp.fo.fk,..`` also each variant with each forced tile that divides the GEMM (key
``variant@tile``), and cuDNN fp16 through torch.  Every output is checked against the
float64 result of the same fp16 inputs first (``cuda_ab_common.build_check_time``).
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
import cuda_tile_ab  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.plan import stride_multiple_kernel  # noqa: E402
from tvm_deconv.schedules import cuda as cuda_sched  # noqa: E402
from tvm_deconv.schedules import cuda_padded_taps  # noqa: E402
from tvm_deconv.schedules import cuda_tensorcore as tc  # noqa: E402
from tvm_deconv.targets import resolve_target  # noqa: E402


@contextlib.contextmanager
def knobs(pipeline: str | None = None, x_gather: str | None = None,
          input_copy: str | None = None, copy_lanes: str | None = None,
          exact_phases: bool = False):
    """:mod:`~tvm_deconv.schedules.cuda_tensorcore`'s A/B knobs set within the context
    (``pipeline``: the K pipeline of every call, with or without the input copy; ``None``:
    each knob as shipped); ``exact_phases``: ragged float16 layers at every batch run a
    tensor-core GEMM per phase rather than ``cuda.padded_taps``' zero taps."""
    names = ("K_PIPELINE", "COPY_PIPELINE", "X_GATHER", "INPUT_COPY", "COPY_LANES")
    shipped = {name: getattr(tc, name) for name in names}
    forced = {"X_GATHER": x_gather, "INPUT_COPY": input_copy, "COPY_LANES": copy_lanes}
    if pipeline is not None:
        forced.update(K_PIPELINE=pipeline, COPY_PIPELINE=pipeline)
    for name, value in forced.items():
        if value is not None:
            setattr(tc, name, value)
    max_batch = cuda_padded_taps.PADDED_TAPS_MAX_BATCH
    shipped_max_batch = max_batch["float16"]
    if exact_phases:
        max_batch["float16"] = 0
    try:
        yield  # tvm_deconv.build sets tirx.use_async_copy for CUDA
    finally:
        for name, value in shipped.items():
            setattr(tc, name, value)
        max_batch["float16"] = shipped_max_batch


VARIANTS = {
    "shipped": lambda: knobs(),
    "off": lambda: knobs("off"),
    "double_buffer": lambda: knobs("double_buffer"),
    "rotate": lambda: knobs("rotate"),
    "async": lambda: knobs("async"),
    "x_tiles": lambda: knobs(x_gather="tiles"),
    "x_tiles_double_buffer": lambda: knobs("double_buffer", x_gather="tiles"),
    "x_tiles_rotate": lambda: knobs("rotate", x_gather="tiles"),
    "no_copy": lambda: knobs(input_copy="none"),
    "nhwc": lambda: knobs("off", input_copy="channels_last", copy_lanes="rows"),
    "nhwc_async": lambda: knobs("async", input_copy="channels_last", copy_lanes="rows"),
    "nhwc_async_channel_lanes": lambda: knobs("async", input_copy="channels_last",
                                              copy_lanes="channels"),
    "exact_phases": lambda: knobs(exact_phases=True),
}


def kernel_path(spec) -> str:
    """The implementation ``tvm_deconv.build`` gives ``spec`` on CUDA and, where it is the
    phase-batched kernel, which one: the knobs reach the tensor-core kernel only (batch-1
    layers that split K run the FFMA one, and every variant times the same)."""
    impl = strategy.select(strategy.CONV_TRANSPOSE, spec, resolve_target("cuda")).implementation
    name = impl.name if impl else "TVM's default"
    gemm = stride_multiple_kernel(spec) if name == "cuda.padded_taps" else spec
    if name in ("cuda.decomposed", "cuda.padded_taps"):
        name += " (tensor cores)" if cuda_sched.uses_tensor_core_kernel(gemm) else " (FFMA)"
    return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="comma-separated layer:batch")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tiles", default="", help="also these forced tiles (wp.wo.fp.fo.fk)")
    parser.add_argument("--out", default="cuda_tc_variants_ab.json")
    args = parser.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev, rows = tvm.cuda(0), []
    for case in args.cases.split(","):
        name, batch = case.split(":")
        spec = zoo.get(name).spec(int(batch), dtype="float16")
        x, w, xt, wt, ref = cuda_ab_common.random_case(spec)
        row = {"layer": name, "batch": int(batch), "dtype": "float16", "path": kernel_path(spec)}
        g = tc.gemm_shape(spec)
        row["base_tile"] = ".".join(str(getattr(tc.choose_tile(g), f))
                                    for f in ("wp", "wo", "fp", "fo", "fk"))
        tiles = [t for t in args.tiles.split(",") if t]
        keys = []
        for variant in args.variants.split(","):
            for text in [None] + tiles:
                tile = text and cuda_tile_ab.parse_tile(text)
                if tile and not tile.divides(g):
                    continue
                keys.append(variant + (f"@{text}" if text else ""))
                with VARIANTS[variant](), cuda_tile_ab.variant(tile=tile):
                    cuda_ab_common.build_check_time(row, keys[-1], spec, x, w, ref, dev,
                                                    budget_s=0.5)
        with torch.no_grad():
            row["cudnn_fp16_ms"] = cuda_ab_common.time_cudnn(spec, xt, wt)
        for key in keys:
            if key + "_ms" in row:
                row[key + "_vs_cudnn_fp16"] = row["cudnn_fp16_ms"] / row[key + "_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
