"""``tvm-deconv tune``: MetaSchedule-tune the transposed convs of zoo layers or a model.

On a board (``--rpc-tracker HOST:PORT --rpc-key KEY``): candidates are built here with
MetaSchedule's LocalBuilder, exported as a shared library (cross-compiled with ``--cross-cc``
for AArch64 targets: the default ``.tar`` export does not load on a board) and measured on
the board through the RPC tracker (``RPCRunner``).  Verifying candidates against the
reference needs the device locally, so board tuning requires ``--no-verify`` for now; check
the result on the board afterwards (tests/test_arm.py's board tests show how).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
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
    board = parser.add_argument_group("measuring on a board through an RPC tracker")
    board.add_argument("--rpc-tracker", metavar="HOST:PORT",
                       help="RPC tracker the board's rpc_server registered with "
                            "(scripts/arm_board.sh start: 127.0.0.1:9190)")
    board.add_argument("--rpc-key", metavar="KEY",
                       help="the board's key on the tracker (emulated board: aarch64-qemu)")
    board.add_argument("--rpc-timeout", type=int, default=120, metavar="SEC",
                       help="RPC session timeout per measurement batch (default 120)")
    board.add_argument("--cross-cc", default="aarch64-linux-gnu-gcc",
                       help="cross compiler for AArch64 targets (default aarch64-linux-gnu-gcc)")


def export_shared_library(mod, cross_cc: str | None = None) -> str:
    """LocalBuilder ``f_export``: the built candidate as a ``.so`` (cross-compiled with
    ``cross_cc`` when given) that a board's RPC server can load."""
    from tvm.support import cc  # pylint: disable=import-outside-toplevel

    path = os.path.join(tempfile.mkdtemp(prefix="tvm_deconv_build_"), "candidate.so")
    fcompile = cc.cross_compiler(cross_cc) if cross_cc else cc.create_shared
    mod.export_library(path, fcompile=fcompile)
    return path


def _parse_tracker(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--rpc-tracker {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def _is_cross(target) -> bool:
    """Code for another architecture than this machine's (cannot run here)."""
    import platform  # pylint: disable=import-outside-toplevel

    from .schedules.x86 import is_aarch64  # pylint: disable=import-outside-toplevel

    machine = platform.machine().lower()
    host = target.host if "gpu" in target.keys and target.host is not None else target
    if host.kind.name != "llvm":
        return False
    return is_aarch64(host) != (machine in ("aarch64", "arm64"))


def board_runner_and_builder(args, target):
    """(runner, builder) measuring on the board behind ``--rpc-tracker`` / ``--rpc-key``."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    host, port = _parse_tracker(args.rpc_tracker)
    cross_cc = args.cross_cc if _is_cross(target) else None
    if cross_cc and shutil.which(cross_cc) is None:
        raise FileNotFoundError(
            f"{cross_cc} not found: it links the candidates for the board "
            "(Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu), or pass --cross-cc")
    runner = ms.runner.RPCRunner(ms.runner.RPCConfig(
        tracker_host=host, tracker_port=port, tracker_key=args.rpc_key,
        session_timeout_sec=args.rpc_timeout))
    # The default 30 s build timeout is too short on 2-core machines.
    builder = ms.builder.LocalBuilder(
        timeout_sec=120, f_export=functools.partial(export_shared_library, cross_cc=cross_cc))
    return runner, builder


def _error(message: str) -> int:
    print(f"tvm-deconv tune: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args.target if not args.target.startswith("{")
                            else json.loads(args.target))
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    runner, builder = "local", None
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        return _error("--rpc-tracker and --rpc-key go together")
    if args.rpc_tracker:
        if not args.no_verify:
            return _error("verifying candidates needs the device on this machine; board "
                          "tuning (--rpc-tracker) needs --no-verify for now, then check the "
                          "tuned build on the board")
        try:
            runner, builder = board_runner_and_builder(args, target)
        except (ValueError, FileNotFoundError) as err:
            return _error(str(err))
    elif _is_cross(target):
        return _error(f"target {target.export().get('mtriple')} cannot run on this machine: "
                      "measure on a board with --rpc-tracker HOST:PORT --rpc-key KEY "
                      "(scripts/arm_board.sh starts an emulated one)")
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
                              cost_model=args.cost_model, verify=not args.no_verify,
                              runner=runner, builder=builder)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every record measured so far is kept in {args.work_dir}; "
              "run the same command again to continue")
        return 130
    print(tuning.results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"use it: tvm_deconv.build(mod, target, params, tuning_logs={args.work_dir!r})")
    return 0
