"""Run one direct-kernel tile on the GPU, for Nsight Compute (device).

    source .dev/setup.sh && ncu --clock-control none --cache-control none \\
        --kernel-name regex:direct --launch-skip 3 --launch-count 1 \\
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats \\
        python3 benchmarks/cuda_direct_tile_run.py fsrcnn_x2_56_1_k9s2 1 2x2x4x8x8x8v \\
        [--dtype float16]

Builds the tile's PrimFunc (:func:`~tvm_deconv.schedules.cuda_direct.tile_of_label`) alone
through ``tvm.compile``, runs it on random inputs a few times, then prints the median of the
time evaluator (without the profiler, the kernel's time; under it, the profiler's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tvm  # noqa: E402

from tvm_deconv import zoo  # noqa: E402
from tvm_deconv.compute import decomposed_packed_shape  # noqa: E402
from tvm_deconv.schedules import cuda_direct  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", help="a zoo layer name")
    parser.add_argument("batch", type=int)
    parser.add_argument("tile", help="a tile label, e.g. 2x2x4x8x8x8v")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    args = parser.parse_args(argv)
    spec = zoo.get(args.layer).spec(args.batch, args.dtype)
    tile = cuda_direct.tile_of_label(spec, args.tile)
    ex = tvm.compile(tvm.IRModule({"main": cuda_direct.direct_conv_transpose(spec, tile)}),
                     tvm.target.Target("cuda"))
    dev = tvm.cuda(0)
    rng = np.random.default_rng(0)
    tensors = [tvm.runtime.tensor(rng.standard_normal(shape).astype(args.dtype), dev)
               for shape in (spec.data_shape, decomposed_packed_shape(spec), spec.out_shape)]
    for _ in range(4):
        ex(*tensors)
    dev.sync()
    timing = ex.mod.time_evaluator("main", dev, number=200, repeat=5)(*tensors)
    print(args.tile, args.dtype, tile, f"median {np.median(timing.results) * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
