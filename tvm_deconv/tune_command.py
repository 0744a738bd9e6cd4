"""``tvm-deconv tune``: MetaSchedule-tune the transposed convs of zoo layers or a model."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from . import tuning, zoo
from .targets import resolve_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--layers", help="comma-separated zoo layer names, or 'all'")
    what.add_argument("--model", choices=["dcgan"], help="tune every deconv of a model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--trials", type=int, default=64, help="trials per task (default 64)")
    parser.add_argument("--spaces", default="ours,stock",
                        help="design spaces: ours, stock or both (default ours,stock)")
    parser.add_argument("--work-dir", required=True,
                        help="MetaSchedule JSON database; re-running the command resumes")
    parser.add_argument("--cost-model", default="xgb", choices=["xgb", "mlp", "random"])
    parser.add_argument("--no-verify", action="store_true",
                        help="store records without checking them against the reference")
    parser.add_argument("--json", help="write the results table as JSON here")


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args.target if not args.target.startswith("{")
                            else json.loads(args.target))
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    if args.model == "dcgan":
        from .models import dcgan_generator  # pylint: disable=import-outside-toplevel

        mod, params = dcgan_generator(batch=args.batch)
        tasks = tuning.extract_tasks(mod, target, spaces)
    else:
        names = ([l.name for l in zoo.LAYERS] if args.layers == "all"
                 else [n.strip() for n in args.layers.split(",") if n.strip()])
        tasks = tuning.make_tasks([zoo.get(n).spec(args.batch) for n in names], target, spaces)
    print(f"tuning {len(tasks)} task(s), {args.trials} trials each, into {args.work_dir}")
    try:
        results = tuning.tune(tasks, target, args.work_dir, trials=args.trials,
                              cost_model=args.cost_model, verify=not args.no_verify)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every record measured so far is kept in {args.work_dir}; "
              "run the same command again to continue")
        return 130
    print(tuning.results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"use it: tvm_deconv.build(mod, target, params, tuning_logs={args.work_dir!r})")
    return 0
