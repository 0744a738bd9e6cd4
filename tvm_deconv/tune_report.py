"""``tvm-deconv tune-report``: the tuning cost of each design space, from a tuning database.

For each zoo layer (or model deconv) with records in ``--work-dir``: the best latency per
design space and the trials each space needed to reach 90% of its final speed (records are
stored in measurement order).  Writes a Markdown table, optionally JSON and a plot of the
best-so-far speed against trials (``--plot``, needs the ``[plot]`` extra: matplotlib).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import tuning, zoo
from .targets import resolve_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", required=True, help="the database of `tvm-deconv tune`")
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--layers", default="all",
                      help="comma-separated zoo layer names, or 'all' (default)")
    what.add_argument("--model", help="the deconvs of a zoo model (as for `tvm-deconv tune`)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.9,
                        help="report trials to this fraction of the final speed (default 0.9)")
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--json", help="write the rows (with the curves) as JSON here")
    parser.add_argument("--plot", help="plot best-so-far GFLOP/s against trials (PNG, SVG...)")


def _tasks(args, target) -> list:
    if args.model:
        from .models import build_model  # pylint: disable=import-outside-toplevel

        return tuning.extract_tasks(build_model(args.model, batch=args.batch).mod, target)
    names = ([l.name for l in zoo.LAYERS] if args.layers == "all"
             else [n.strip() for n in args.layers.split(",") if n.strip()])
    specs = []
    for name in names:
        spec = zoo.get(name).spec(args.batch)
        try:
            tuning.workload_func(spec, tuning.DEFAULT, target)
        except ValueError:
            continue  # no implementation on this target: it was never tuned
        specs.append(spec)
    return tuning.make_tasks(specs, target)


def plot_curves(curves: list, path: str) -> None:
    """Best-so-far GFLOP/s against trials, one panel per layer, one line per space."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise SystemExit("tvm-deconv tune-report: --plot needs matplotlib: "
                         "pip install 'tvm-deconv[plot]'") from None
    specs = list(dict.fromkeys(c.spec for c in curves))
    cols = min(3, len(specs))
    rows = -(-len(specs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, specs):
        for curve in (c for c in curves if c.spec == spec):
            gflops = [curve.flops / (ms * 1e6) for ms in curve.best_ms]
            if len(gflops) == 1:
                ax.axhline(gflops[0], linestyle="--", color="gray", label=curve.space)
            else:
                ax.plot(range(1, len(gflops) + 1), gflops, label=curve.space)
        ax.set_title(spec, fontsize=8)
        ax.set_xlabel("trials")
        ax.set_ylabel("best GFLOP/s")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(specs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args.target if not args.target.startswith("{")
                            else json.loads(args.target))
    curves = tuning.tuning_curves(args.work_dir, _tasks(args, target))
    if not curves:
        print(f"tvm-deconv tune-report: no records of these tasks in {args.work_dir}")
        return 1
    rows = tuning.cost_report(curves, args.fraction)
    table = tuning.cost_report_table(rows, args.fraction)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot_curves(curves, args.plot)
        print(f"plot: {args.plot}")
    return 0
