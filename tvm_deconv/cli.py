"""``tvm-deconv`` command line: one subcommand per module with add_arguments/run."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .plan import PlanError
from .targets import TargetError
from .tuning import TuningLogError

SUBCOMMANDS = {
    "demo": ("tvm_deconv.demo", "compile a DCGAN generator with and without tvm-deconv"),
    "tune": ("tvm_deconv.tune_command", "MetaSchedule-tune zoo layers or a model's deconvs"),
    "tune-report": ("tvm_deconv.tune_report",
                    "trials each design space needed, from a tuning database"),
    "bench": ("tvm_deconv.bench", "benchmark zoo layers, models or dilated convs against TVM's default (untuned and tuned), ORT, PyTorch"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tvm-deconv", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s")
    try:
        return modules[args.command].run(args)
    except (PlanError, TargetError, TuningLogError) as err:
        print(f"tvm-deconv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
