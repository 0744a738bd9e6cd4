"""CUDA kernel variants side by side (device): grid order, tensor-core tiles.

    source .dev/setup.sh && python3 benchmarks/cuda_tile_ab.py \\
        pose_2048_256_k4s2:64,unet_512_256_k2s2:64 --out $OUT/tile-ab.json

Per case ``layer:batch`` (zoo names) and dtype (``--dtypes``): cuDNN through torch (fp32 with
TF32 off; fp16), then ours built through ``tvm_deconv.build`` (weight constant) under each
variant, checked against the float64 result of the same inputs and timed with the VM's
time_evaluator:

* ``base``: the shipped defaults (grid order by
  :func:`~tvm_deconv.schedules.cuda.phases_fastest`);
* ``phases_fastest`` / ``phases_outer``: the phases forced on the fastest / slowest grid
  dimensions (FFMA: ``_Knobs.phases_fastest``, tensor cores:
  :data:`~tvm_deconv.schedules.cuda_tensorcore.PHASES_FASTEST`);
* ``--threads-first``: float32 calls also with ``_choose_tiles`` halving the threads (to 64)
  before the per-thread tile where the grid is short of the chip (``threads_first``);
* ``--bk-caps 4,32``: float32 calls also with at most that many input channels per K step
  (``bk_cap``; shipped :data:`~tvm_deconv.schedules.cuda.BK_CAP`);
* ``--no-halving``: float32 calls also without ``_choose_tiles``'s 128-thread rule
  (``halve_full_blocks`` off: the 256-thread tile of the sessions before 16);
* ``--start-tiles``: float32 calls also each FFMA start tile of
  :data:`~tvm_deconv.schedules.cuda.TILE_CHOICES` (``start_VO.VW.threads``) other than the
  shipped :data:`~tvm_deconv.schedules.cuda.START_TILE`;
* float16 calls on the tensor-core path also each forced tile of ``--tiles``
  (``wp.wo.fp.fo.fk``: warps over pixels / channels, 16x16 fragments per warp, fragments of
  K per step) where it divides the GEMM.
"""

from __future__ import annotations

import argparse
import contextlib
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

from tvm_deconv import zoo  # noqa: E402
from tvm_deconv.plan import make_plan  # noqa: E402
from tvm_deconv.schedules import cuda as cuda_sched  # noqa: E402
from tvm_deconv.schedules import cuda_tensorcore as tc  # noqa: E402

DEFAULT_TILES = "2.2.4.2.2,2.2.4.4.2,2.2.2.4.2,2.2.2.2.2"


@contextlib.contextmanager
def variant(phases_fastest=None, tile=None, start_tile=cuda_sched.START_TILE,
            halve_full_blocks=True, threads_first=False, bk_cap=cuda_sched.BK_CAP):
    """Within the context, builds use these knobs (module state and schedule_cuda's default
    knobs; the registered strategy calls schedule_cuda without knobs)."""
    saved = (tc.PHASES_FASTEST, tc.choose_tile, cuda_sched.schedule_cuda.__defaults__)
    tc.PHASES_FASTEST = phases_fastest
    if tile is not None:
        tc.choose_tile = lambda g, num_sms=132: tile
    cuda_sched.schedule_cuda.__defaults__ = (
        dataclasses.replace(cuda_sched.GPU, phases_fastest=phases_fastest,
                            start_tile=start_tile, halve_full_blocks=halve_full_blocks,
                            threads_first=threads_first, bk_cap=bk_cap),)
    try:
        yield
    finally:
        tc.PHASES_FASTEST, tc.choose_tile, cuda_sched.schedule_cuda.__defaults__ = saved


def run(row, key, spec, x, w, ref, dev, **knobs):
    with variant(**knobs):
        cuda_ab_common.build_check_time(row, key, spec, x, w, ref, dev, budget_s=0.3)


def parse_tile(text: str) -> tc.TensorCoreTile:
    """A ``--tiles`` entry ``wp.wo.fp.fo.fk``."""
    return tc.TensorCoreTile(*map(int, text.split(".")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="comma-separated layer:batch")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--tiles", default=DEFAULT_TILES)
    parser.add_argument("--start-tiles", action="store_true")
    parser.add_argument("--no-halving", action="store_true")
    parser.add_argument("--threads-first", action="store_true")
    parser.add_argument("--bk-caps", default="")
    parser.add_argument("--no-grid-order", action="store_true",
                        help="skip the forced grid orders")
    parser.add_argument("--out", default="cuda_tile_ab.json")
    args = parser.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = tvm.cuda(0)
    rows = []
    for case in args.cases.split(","):
        name, batch = case.split(":")
        for dtype in args.dtypes.split(","):
            spec = zoo.get(name).spec(int(batch), dtype=dtype)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(spec.data_shape).astype(dtype)
            w = rng.standard_normal(spec.weight_shape).astype(dtype)
            xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
            ref = cuda_ab_common.torch_conv(spec, xt.double(), wt.double()).cpu().numpy()
            row = {"layer": name, "batch": int(batch), "dtype": dtype,
                   "gflop": make_plan(spec).useful_flops() / 1e9}
            with torch.no_grad():
                row["cudnn_ms"] = cuda_ab_common.time_cudnn(spec, xt, wt)
            run(row, "base", spec, x, w, ref, dev)
            if not args.no_grid_order:
                run(row, "phases_fastest", spec, x, w, ref, dev, phases_fastest=True)
                run(row, "phases_outer", spec, x, w, ref, dev, phases_fastest=False)
            if args.threads_first and dtype == "float32":
                run(row, "threads_first", spec, x, w, ref, dev, threads_first=True)
            for cap in [int(c) for c in args.bk_caps.split(",") if c] if dtype == "float32" else []:
                run(row, f"bk_cap{cap}", spec, x, w, ref, dev, bk_cap=cap)
            if args.no_halving and dtype == "float32":
                run(row, "no_halving", spec, x, w, ref, dev, halve_full_blocks=False)
            if args.start_tiles and dtype == "float32":
                for start in cuda_sched.TILE_CHOICES:
                    if start != cuda_sched.START_TILE:
                        run(row, "start_" + ".".join(map(str, start)), spec, x, w, ref, dev,
                            start_tile=start)
            if tc.tensor_core_reason(spec) is None:
                g = tc.gemm_shape(spec)
                row["base_tile"] = dataclasses.asdict(tc.choose_tile(g))
                for text in [t for t in args.tiles.split(",") if t]:
                    tile = parse_tile(text)
                    if tile.divides(g) and tile != tc.choose_tile(g):
                        run(row, text, spec, x, w, ref, dev, tile=tile)
            for key in [k[:-3] for k in list(row) if k.endswith("_ms") and k != "cudnn_ms"]:
                row[key + "_vs_cudnn"] = row["cudnn_ms"] / row[key + "_ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(0),
                                                  "rows": rows}, indent=1))
    for row in rows:
        limit = 2e-3 if row["dtype"] == "float16" else 1e-5
        cells = [f"{k[:-3]}={row[k]:.4f}({row[k[:-3] + '_vs_cudnn']:.2f}x)"
                 for k in row if k.endswith("_ms") and k != "cudnn_ms"]
        bad = [k for k in row if k.endswith("_err") and row[k] > limit]
        print(row["layer"], row["batch"], row["dtype"], f"cudnn={row['cudnn_ms']:.4f}",
              " ".join(cells), "BAD:" + ",".join(bad) if bad else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
