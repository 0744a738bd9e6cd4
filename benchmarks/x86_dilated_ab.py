"""The packed conv kernel (``schedules/x86_dilated.py``) now against a "before", timed
alternately in one process, every output checked against float64:

* ``--before REV``: the same file at an earlier revision (1d5f150: register tiles along one
  phase's positions only, before tiles spanning phases);
* ``--isa-before x86``: the current file with the 16-register ``schedules.x86.X86`` sizes
  (2 channel vectors x 6 positions) instead of ``X86_AVX512``'s (x 12), on an AVX-512 CPU.

Layers: DeepLab's ASPP, WaveNet's dilated convs and ordinary convs of the models.

    python benchmarks/x86_dilated_ab.py 9 benchmarks/results/x86-icelake-dilated-tiles-ab.json \\
        [--before 1d5f150 | --isa-before x86] [--layers aspp_2048_256_k3d18,...]
"""
import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys

from tvm import relax

import tvm_deconv
from tvm_deconv import bench, strategy, zoo
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_spec
from tvm_deconv.schedules import x86_dilated
from tvm_deconv.schedules.x86 import X86
from tvm_deconv.testing import random_inputs

parser = argparse.ArgumentParser()
parser.add_argument("rounds", type=int)
parser.add_argument("out")
parser.add_argument("--before", default="1d5f150",
                    help="git revision whose schedules/x86_dilated.py is 'before'")
parser.add_argument("--isa-before", choices=["x86"], default=None,
                    help="before = the current file with schedules.x86.X86's tile sizes")
parser.add_argument("--layers", default="", help="comma-separated subset of the names below")
args = parser.parse_args()


def module_at(rev: str):
    """``schedules/x86_dilated.py`` as it was at ``rev``, imported beside the current one."""
    source = subprocess.run(["git", "show", f"{rev}:schedules/x86_dilated.py"], check=True,
                            capture_output=True, text=True).stdout
    name = "tvm_deconv.schedules.x86_dilated_before"
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    mod.__package__ = "tvm_deconv.schedules"
    sys.modules[name] = mod  # (dataclasses look their module up there)
    exec(compile(source, f"{rev}:schedules/x86_dilated.py", "exec"), mod.__dict__)  # noqa: S102
    return mod


specs = {l.name: l.spec() for l in zoo.DILATED_LAYERS}
# ordinary convs of the models (pix2pix's k4 s2 encoder, CycleGAN's stem, down and residual)
specs.update({
    "pix2pix_conv_64_128_128": make_dilated_spec((1, 64, 128, 128), (128, 64, 4, 4), strides=2,
                                                 padding=1),
    "pix2pix_conv_256_512_32": make_dilated_spec((1, 256, 32, 32), (512, 256, 4, 4), strides=2,
                                                 padding=1),
    "pix2pix_conv_512_512_16": make_dilated_spec((1, 512, 16, 16), (512, 512, 4, 4), strides=2,
                                                 padding=1),
    "cyclegan_stem_3_64_k7": make_dilated_spec((1, 3, 256, 256), (64, 3, 7, 7), padding=3),
    "cyclegan_down_64_128_k3s2": make_dilated_spec((1, 64, 256, 256), (128, 64, 3, 3), strides=2,
                                                   padding=1),
    "cyclegan_res_256_256_k3": make_dilated_spec((1, 256, 64, 64), (256, 256, 3, 3), padding=1),
})
if args.layers:
    specs = {n: specs[n] for n in args.layers.split(",")}
now = strategy.get("x86.dilated")
# both sides on x86.dilated: x86.conv1d_positions (stride-1 1-d NCW convs, WaveNet) off
strategy.register(strategy.DILATED_CONV, dataclasses.replace(
    strategy.get("x86.conv1d_positions"), predicate=lambda spec, target: "A/B: off"))
if args.isa_before:
    before = x86_dilated
    variants = {"before": dataclasses.replace(
        now, compute=lambda spec: x86_dilated.dilated_compute(spec, X86),
        pack=lambda spec: x86_dilated.dilated_pack(spec, X86)), "now": now}
else:
    before = module_at(args.before)
    variants = {"before": dataclasses.replace(now, compute=before.dilated_compute,
                                              pack=before.dilated_pack), "now": now}
target = tvm_deconv.resolve_target("llvm")
res = {}
for name, spec in specs.items():
    data, weight = random_inputs(spec, seed=1)
    op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d}[spec.ndim]
    mod = bench._one_op_module(op, spec.data_shape, spec.weight_shape, spec.dtype,  # noqa: SLF001
                               strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                               dilation=spec.dilation)
    impls, layouts = {}, {}
    for tag, impl in variants.items():
        strategy.register(strategy.DILATED_CONV, impl)
        lay = (before if tag == "before" else x86_dilated).dilated_layout(
            spec, *([X86] if tag == "before" and args.isa_before else []))
        layouts[tag] = dict(tile=list(lay.tq), spans=list(getattr(lay, "spans", ())),
                            channel_vectors=lay.obt)
        impls[tag] = bench.tvm_prepared(
            lambda: tvm_deconv.build(mod, target, {"w": weight}, tuning_logs=False), [data])
    strategy.register(strategy.DILATED_CONV, now)
    med, errs = bench.checked_medians(impls, dilated_conv_reference(data, weight, spec),
                                      args.rounds)
    res[name] = dict(median_ms=med, layouts=layouts, rel_err=errs,
                     speedup=med["before"] / med["now"])
    print(name, json.dumps(res[name]), flush=True)
json.dump(dict(before=f"isa {args.isa_before}" if args.isa_before else args.before,
               target=str(target), results=res), open(args.out, "w"), indent=1)
print("\n| layer | before ms | now ms | now vs before |\n|---|---|---|---|")
for name, r in res.items():
    print(f"| {name} | {r['median_ms']['before']:.3f} | {r['median_ms']['now']:.3f} | "
          f"{r['speedup']:.2f}x |")
