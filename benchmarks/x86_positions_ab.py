"""1-d convs on ``x86.conv1d_positions`` (``schedules/x86_positions.py``: lanes over output
positions) against the kernel that took them before (``x86.dilated``: lanes over output
channels; TVM's default where that declines), timed alternately in one process, every output
checked against float64.  Layers: WaveNet's dilated convs and HiFi-GAN's (its resblocks' k3/7/11
convs at dilations 1/3/5, conv_pre and the one-channel conv_post).

    python benchmarks/x86_positions_ab.py 9 benchmarks/results/x86-znver4-positions-ab.json \\
        [--layers wavenet_64_128_k2d2,...]
"""
import argparse
import dataclasses
import json

from tvm import relax

import tvm_deconv
from tvm_deconv import bench, strategy, zoo
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_spec
from tvm_deconv.testing import random_inputs

parser = argparse.ArgumentParser()
parser.add_argument("rounds", type=int)
parser.add_argument("out")
parser.add_argument("--layers", default="", help="comma-separated subset of the names below")
args = parser.parse_args()

specs = {l.name: l.spec() for l in zoo.DILATED_LAYERS if len(l.spec().in_size) == 1}


def hifigan(cin, cout, length, k, d):
    return make_dilated_spec((1, cin, length), (cout, cin, k), padding=(k * d - d) // 2,
                             dilation=d)


specs.update({
    "hifigan_res_256_k3d1_L256": hifigan(256, 256, 256, 3, 1),
    "hifigan_res_256_k11d5_L256": hifigan(256, 256, 256, 11, 5),
    "hifigan_res_128_k7d3_L2048": hifigan(128, 128, 2048, 7, 3),
    "hifigan_res_32_k11d5_L8192": hifigan(32, 32, 8192, 11, 5),
    "hifigan_pre_80_512_k7_L32": hifigan(80, 512, 32, 7, 1),
    "hifigan_post_32_1_k7_L8192": hifigan(32, 1, 8192, 7, 1),
})
if args.layers:
    specs = {n: specs[n] for n in args.layers.split(",")}
now = strategy.get("x86.conv1d_positions")
variants = {"before": dataclasses.replace(now, predicate=lambda spec, target: "A/B: off"),
            "now": now}
target = tvm_deconv.resolve_target("llvm")
res = {}
for name, spec in specs.items():
    data, weight = random_inputs(spec, seed=1)
    mod = bench._one_op_module(relax.op.nn.conv1d, spec.data_shape, spec.weight_shape,  # noqa
                               spec.dtype, strides=spec.strides,
                               padding=spec.pad_before + spec.pad_after, dilation=spec.dilation)
    impls, chosen = {}, {}
    for tag, impl in variants.items():
        strategy.register(strategy.DILATED_CONV, impl)
        impl_now = strategy.select(strategy.DILATED_CONV, spec, target).implementation
        # (an ordinary conv with no packed implementation keeps TVM's default lowering)
        chosen[tag] = ("TVM default" if impl_now.pack is None and max(spec.dilation) == 1
                       else impl_now.name)
        impls[tag] = bench.tvm_prepared(
            lambda: tvm_deconv.build(mod, target, {"w": weight}, tuning_logs=False), [data])
    strategy.register(strategy.DILATED_CONV, now)
    med, errs = bench.checked_medians(impls, dilated_conv_reference(data, weight, spec),
                                      args.rounds)
    res[name] = dict(median_ms=med, implementation=chosen, rel_err=errs,
                     speedup=med["before"] / med["now"])
    print(name, json.dumps(res[name]), flush=True)
json.dump(dict(target=str(target), results=res), open(args.out, "w"), indent=1)
print("\n| layer | before | before ms | now ms | now vs before |\n|---|---|---|---|---|")
for name, r in res.items():
    print(f"| {name} | {r['implementation']['before']} | {r['median_ms']['before']:.3f} | "
          f"{r['median_ms']['now']:.3f} | {r['speedup']:.2f}x |")
