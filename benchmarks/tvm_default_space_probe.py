"""How many of MetaSchedule's samples of TVM's default lowering of a zoo layer pass its
postprocessors (VerifyGPUCode & co.) on a target: the candidates that "TVM's default, tuned"
(``tvm-deconv bench --tune-trials N``) can measure at all.  Runs on the CPU (no build).

    python3 benchmarks/tvm_default_space_probe.py cyclegan_128_64_k3s2:64,unet_512_256_k2s2:64
"""

from __future__ import annotations

import argparse
from collections import Counter

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

import tvm_deconv
from tvm_deconv import bench, zoo
from tvm_deconv.testing import random_inputs, transposed_conv_module


def probe(name: str, batch: int, target, seeds: int) -> dict:
    """Samples per design space of the layer's tasks (``seeds`` each) and how many passed."""
    spec = zoo.get(name).spec(batch)
    _, weight = random_inputs(spec, seed=0)
    fused = bench._fused_like_compile_relax(  # pylint: disable=protected-access
        transposed_conv_module(spec), {"w": tvm.runtime.tensor(weight)}, target)
    result = {"layer": name, "batch": batch, "samples": 0, "valid": 0, "rejected_by": Counter()}
    for task in ms.relax_integration.extract_tasks(fused, target):
        mod = task.dispatched[0]
        context = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                                 task_name=task.task_name)
        for design in context.space_generator.generate_design_space(mod):
            for seed in range(1, seeds + 1):
                sch = s_tir.Schedule(mod, seed=seed)
                s_tir.Trace(design.trace.insts, {}).apply_to_schedule(sch, remove_postproc=True)
                result["samples"] += 1
                for post in context.space_generator.postprocs:
                    if not post.apply(sch):
                        result["rejected_by"][type(post).__name__] += 1
                        break
                else:
                    result["valid"] += 1
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layers", help="comma-separated name:batch")
    ap.add_argument("--target", default="cuda")
    ap.add_argument("--seeds", type=int, default=40, help="samples per design")
    args = ap.parse_args()
    target = tvm_deconv.resolve_target(args.target)
    for item in args.layers.split(","):
        name, batch = item.split(":")
        r = probe(name, int(batch), target, args.seeds)
        print(f"{r['layer']} N={r['batch']}: {r['valid']} of {r['samples']} samples valid; "
              f"rejected by {dict(r['rejected_by'])}")


if __name__ == "__main__":
    main()
