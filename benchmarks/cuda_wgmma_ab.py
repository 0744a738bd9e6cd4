"""A/B on the GPU machine: tvm_deconv.build with cuda.wgmma switched off (``wmma``: the WMMA
tensor-core kernel; float32: ``ffma``, the FFMA kernels) and on (``build_wgmma``: the sm_90a
wgmma kernel of schedules/cuda_wgmma.py through the Relax path; float32 as 3xTF32), tiles of
the wgmma kernel alone, and cuDNN in the same dtype (float32: TF32 off, and ``cudnn_tf32``
for information), side by side in one process; every output checked against the float64
result of the same inputs.

    python3 benchmarks/cuda_wgmma_ab.py pose_2048_256_k4s2:64,unet_512_256_k2s2:64 \
        --variants 256x4,256x4sync,256x4syncfltma --out $OUT/wgmma-ab.json
    python3 benchmarks/cuda_wgmma_ab.py fcn8s_21_21_k16s8:64 --dtype float32 --variants ''

A variant is ``chosen`` (the tile :func:`choose_tile` gives the layer) or ``{BN}x{stages}``,
then ``sync`` for the loop whose warpgroups all copy, then multiply, between CTA barriers
(else one warpgroup copies while two multiply), ``tc`` for the input copy through
shared-memory tiles, ``fl`` for one step's wgmmas in flight while the next are issued
(``sync`` only), ``tma`` for the weight tile by TMA.  ``:nocopy`` or
``:nomma`` after it time that kernel with its stage copies or its wgmmas removed (a probe of
where the time goes: its output is wrong and not checked); ``:ref``, the kernel (and weight
pack) of the file ``--ref`` names instead, another revision of schedules/cuda_wgmma.py (``git
show REV:schedules/cuda_wgmma.py > ref.py``).  ``--variants ''`` times the builds alone.
``--profile`` adds each kernel's time (ours and cuDNN's); ``--tvm-default``, TVM's default
lowering of the layer (``tvm_default``).  Layers the wgmma kernel cannot run get their builds
and no variants.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cuda_ab_common as common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

from tvm_deconv import resolve_target, strategy, zoo  # noqa: E402
from tvm_deconv.schedules import cuda_wgmma  # noqa: E402
from tvm_deconv.testing import relative_error, run_pack  # noqa: E402

SM90A = tvm.target.Target({"kind": "cuda", "arch": "sm_90a"})


def profile_kernels(call, calls: int = 5) -> dict:
    """Microseconds per call of each CUDA kernel ``call`` launches (CUPTI, through torch)."""
    call()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / calls for e in prof.key_averages()
            if e.device_time_total > 0}


# what a probe removes from the kernel's source
PROBES = {"nocopy": ("T.ptx.cp.async_.cg.shared.global_(", "_probe_skip("),
          "nomma": ("_wgmma(ops, bn, acc, desc_a[0], desc_b[0])", "T.evaluate(0)")}


def variant_module(suffix: str, ref: str | None):
    """schedules/cuda_wgmma.py with the statements of probe ``suffix`` removed, or (``ref``)
    the revision in file ``ref``, as a module."""
    if suffix == "ref":
        source = Path(ref).read_text()
    else:
        old, new = PROBES[suffix]
        source = Path(cuda_wgmma.__file__).read_text()
        assert old in source, f"probe {suffix}: {old!r} is no longer in the kernel"
        source = source.replace(old, new) + "\n\ndef _probe_skip(*_):\n    return T.int32(0)\n"
    path = Path(tempfile.mkdtemp()) / f"cuda_wgmma_{suffix}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(
        f"tvm_deconv.schedules._cuda_wgmma_{suffix}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_variant(row, key, spec, x, w, ref, dev, variant, profile=False, ref_source=None):
    try:
        form, _, suffix = variant.partition(":")
        kernels = variant_module(suffix, ref_source) if suffix else cuda_wgmma
        if form == "chosen":
            tile = kernels.choose_tile(spec)
        else:
            bn, stages, sync, tiled, in_flight, tma = re.fullmatch(
                r"(\d+)x(\d+)(sync)?(tc)?(fl)?(tma)?", form).groups()
            tile = kernels.WgmmaTile(int(bn), int(stages), warp_specialized=not sync,
                                     tiled_copy=bool(tiled), mma_in_flight=bool(in_flight),
                                     tma_b=bool(tma))
        row[key + "_bn"] = tile.bn
        func = kernels.wgmma_conv_transpose(spec, tile)
        w_packed = run_pack(kernels.wgmma_pack(spec), w)
        ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         target=SM90A)
        args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w_packed, dev),
                tvm.runtime.tensor(np.zeros(spec.out_shape, spec.dtype), dev)]
        ex.mod["main"](*args)
        dev.sync()
        if suffix in ("", "ref"):
            row[key + "_err"] = relative_error(args[2].numpy().astype("float64"), ref)
        timer = ex.mod.time_evaluator("main", dev, number=20, repeat=15)
        row[key + "_ms"] = float(np.median(np.asarray(timer(*args).results)) * 1e3)
        if profile:  # per-kernel times (the input copy, the GEMM)
            row[key + "_kernels_us"] = profile_kernels(lambda: ex.mod["main"](*args))
    except Exception as err:  # pylint: disable=broad-except
        row[key + "_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        traceback.print_exc()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layers")
    ap.add_argument("--variants", default="256x4,256x4sync")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also each kernel's time (CUPTI)")
    ap.add_argument("--ref", help="another revision of schedules/cuda_wgmma.py, for ':ref'")
    ap.add_argument("--dtype", default="float16", choices=sorted(cuda_wgmma.OPERANDS))
    ap.add_argument("--tvm-default", action="store_true", help="also TVM's default lowering")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    dev = tvm.cuda(0)
    rows = []
    for item in args.layers.split(","):
        name, batch = item.split(":")
        spec = zoo.get(name).spec(int(batch), dtype=args.dtype)
        row = {"layer": name, "batch": int(batch), "dtype": args.dtype,
               "device": torch.cuda.get_device_name()}
        x, w, xt, wt, ref = common.random_case(spec)
        cudnn = {"float16": "cudnn_fp16", "float32": "cudnn_fp32"}[args.dtype]
        row[cudnn + "_ms"] = common.time_cudnn(spec, xt, wt)
        if args.dtype == "float32":
            torch.backends.cudnn.allow_tf32 = True
            row["cudnn_tf32_ms"] = common.time_cudnn(spec, xt, wt)
            torch.backends.cudnn.allow_tf32 = False
        if args.profile:  # cuDNN's kernels (layout passes, its GEMM) and their times
            row["cudnn_kernels_us"] = profile_kernels(lambda: common.torch_conv(spec, xt, wt))
        if not args.no_build:
            # tvm_deconv.build: cuda.wgmma switched off (the WMMA / FFMA kernels), then on
            with cuda_wgmma.wgmma_kernel(False):
                off = "wmma" if args.dtype == "float16" else "ffma"
                common.build_check_time(row, off, spec, x, w, ref, dev, 1.0)
            with cuda_wgmma.wgmma_kernel(True):
                common.build_check_time(row, "build_wgmma", spec, x, w, ref, dev, 1.0)
                row["build_wgmma_path"] = strategy.select(
                    strategy.CONV_TRANSPOSE, spec, resolve_target("cuda")).implementation.name
        if args.tvm_default:
            common.build_check_time(row, "tvm_default", spec, x, w, ref, dev, 1.0,
                                    decompose=False)
        declines = cuda_wgmma.wgmma_reason(spec)
        if declines:
            row["wgmma_declines"] = declines
        for variant in [] if declines else filter(None, args.variants.split(",")):
            run_variant(row, "wgmma_" + variant, spec, x, w, ref, dev, variant,
                        profile=args.profile, ref_source=args.ref)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
