"""The CUDA direct kernel for few output channels vs the implicit GEMM, per tile (device).

    source .dev/setup.sh && python3 benchmarks/cuda_direct_ab.py \\
        fsrcnn_x2_56_1_k9s2:1,fsrcnn_x2_56_1_k9s2:64 --out $OUT/direct-ab.json

Per case ``layer:batch`` (a zoo name, or ``k<K>s<S>p<P>o<OP>_<CIN>_<COUT>_<SIZE>`` for a
synthetic square layer, to place the output-channel threshold): cuDNN fp32 (TF32 off) and
fp16 through torch; ``gemm`` (``cuda.decomposed``, the path before ``cuda.direct``);
``direct`` with :func:`~tvm_deconv.schedules.cuda_direct.choose_tile`'s tile and with each
tile of ``--tiles``; fp16 of both where they build.  All built through
``tvm_deconv.build`` (weight constant), checked against torch float64 and timed with the VM's
time_evaluator.  ``--max-out-channels`` lifts the direct kernel's threshold for the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cuda_ab_common  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.plan import make_plan  # noqa: E402
from tvm_deconv.schedules import cuda_direct  # noqa: E402

DEFAULT_TILES = "1x1x4x16,1x1x8x16,1x2x8x16,2x2x8x16,2x4x8x16,2x4x4x16,1x4x8x16,2x4x16x16"


def layer_of(name: str):
    m = re.fullmatch(r"k(\d+)s(\d+)p(\d+)o(\d+)_(\d+)_(\d+)_(\d+)", name)
    if m is None:
        return zoo.get(name)
    k, s, p, op, cin, cout, size = map(int, m.groups())
    return zoo.ZooLayer(name, cin, cout, (size, size), k, s, p, op)


def tile_texts(tiles: str, spec) -> list[str]:
    """``--tiles`` as tile labels (:func:`~tvm_deconv.schedules.cuda_direct.tile_of_label`);
    ``space``: every tile of the tuning space but the chosen one."""
    if tiles != "space":
        return [t for t in tiles.split(",") if t]
    return [cuda_direct.tile_label(t) for t in cuda_direct.candidate_tiles(spec)[1:]]


def run_variant(row, key, spec, x, w, ref, dev):
    cuda_ab_common.build_check_time(row, key, spec, x, w, ref, dev, budget_s=0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="comma-separated layer:batch")
    parser.add_argument("--tiles", default=DEFAULT_TILES,
                        help="vy x vx x ty x tx [x kz [x max ck]][p (prefetch)], "
                        "comma-separated; 'space': every tile of the tuning space")
    parser.add_argument("--max-out-channels", type=int, default=4)
    parser.add_argument("--no-fp16", action="store_true")
    parser.add_argument("--out", default="cuda_direct_ab.json")
    args = parser.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = tvm.cuda(0)
    cuda_direct.DIRECT_MAX_OUT_CHANNELS = args.max_out_channels
    direct = strategy.get("cuda.direct")
    off = dataclasses.replace(direct, predicate=lambda spec, target: "disabled for the A/B")
    rows = []
    for case in args.cases.split(","):
        name, batch = case.split(":")
        layer = layer_of(name)
        spec = layer.spec(int(batch))
        rng = np.random.default_rng(0)
        x = rng.standard_normal(spec.data_shape).astype("float32")
        w = rng.standard_normal(spec.weight_shape).astype("float32")
        xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        ref = cuda_ab_common.torch_conv(spec, xt.double(), wt.double()).cpu().numpy()
        x16, w16 = x.astype("float16"), w.astype("float16")
        ref16 = cuda_ab_common.torch_conv(spec, torch.from_numpy(x16).cuda().double(),
                                    torch.from_numpy(w16).cuda().double()).cpu().numpy()
        row = {"layer": name, "batch": int(batch), "gflop": make_plan(spec).useful_flops() / 1e9,
               "chosen_tile": dataclasses.asdict(cuda_direct.choose_tile(spec))}
        with torch.no_grad():
            row["cudnn_fp32_ms"] = cuda_ab_common.time_cudnn(spec, xt, wt)
            xh, wh = xt.half(), wt.half()
            row["cudnn_fp16_ms"] = cuda_ab_common.time_cudnn(spec, xh, wh)
        spec16 = layer.spec(int(batch), dtype="float16")
        strategy.register(strategy.CONV_TRANSPOSE, off)
        run_variant(row, "gemm", spec, x, w, ref, dev)
        if not args.no_fp16:
            run_variant(row, "gemm_fp16", spec16, x16, w16, ref16, dev)
        strategy.register(strategy.CONV_TRANSPOSE, direct)
        why = direct.applies_to(spec, tvm_deconv.resolve_target("cuda"))
        if why is not None:
            row["direct_note"] = why
        else:
            run_variant(row, "direct", spec, x, w, ref, dev)
            if not args.no_fp16:
                run_variant(row, "direct_fp16", spec16, x16, w16, ref16, dev)
            for text in tile_texts(args.tiles, spec):
                tile = cuda_direct.tile_of_label(spec, text)
                strategy.register(strategy.CONV_TRANSPOSE, dataclasses.replace(
                    direct, compute=lambda sp, tile=tile: cuda_direct.direct_conv_transpose(
                        sp, tile)))
                run_variant(row, "direct_" + text, spec, x, w, ref, dev)
            strategy.register(strategy.CONV_TRANSPOSE, direct)
        for key in [k[:-3] for k in list(row) if k.endswith("_ms")]:
            base = row["cudnn_fp16_ms"] if key.endswith("fp16") else row["cudnn_fp32_ms"]
            row[key + "_vs_cudnn"] = base / row[key + "_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(0),
                                              "rows": rows}, indent=1))
    for row in rows:
        cells = [f"{k[:-3]}={row[k]:.4f}ms({row[k[:-3] + '_vs_cudnn']:.2f}x)"
                 for k in row if k.endswith("_ms")]
        bad = [k for k in row if k.endswith("_err") and row[k] > (2e-3 if "fp16" in k else 1e-5)]
        print(row["layer"], row["batch"], row["chosen_tile"], " ".join(cells),
              "BAD:" + ",".join(bad) if bad else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
