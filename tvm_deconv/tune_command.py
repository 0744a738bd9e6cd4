"""``tvm-deconv tune``: MetaSchedule-tune the transposed convs of zoo layers or a model
(``--rest-of-model``: and the rest of the model).

On a board (``--rpc-tracker HOST:PORT --rpc-key KEY``, :mod:`tvm_deconv.rpc`): candidates are
built here (:class:`~tvm_deconv.tuning.PooledBuilder`), exported as a shared library
(cross-compiled with ``--cross-cc`` for AArch64 targets: the default ``.tar`` export does not
load on a board), measured on the board through the RPC tracker, and every would-be best
candidate is run on the board against the float64 reference computed here.  A board that
drops out ends the run with exit status 3 naming it; the records measured before stay and
re-running continues.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from . import tuning, zoo
from .models import MODEL_ALIASES, MODELS, build_model
from .rpc import Board, BoardLost
from .targets import resolve_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--layers", help="comma-separated zoo layer names, or 'all'")
    what.add_argument("--model", help="tune every deconv of a zoo model ("
                      + ", ".join(list(MODELS) + list(MODEL_ALIASES)) + ")")
    parser.add_argument("--small", action="store_true",
                        help="--model at its small test size (quick checks)")
    parser.add_argument("--rest-of-model", action="store_true",
                        help="with --model: also tune the PrimFuncs the plugin does not "
                             "schedule (batch norms, concatenations, ...), into "
                             "WORK_DIR/rest_of_model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--trials", type=int, default=64, help="trials per task (default 64)")
    parser.add_argument("--spaces", default=",".join(tuning.SPACES),
                        help=f"design spaces, comma-separated (default {','.join(tuning.SPACES)}"
                             "; one without a sampled space for the target is skipped)")
    parser.add_argument("--work-dir", required=True,
                        help="MetaSchedule JSON database; re-running the command resumes")
    parser.add_argument("--cost-model", default="xgb", choices=["xgb", "mlp", "random"])
    parser.add_argument("--no-verify", action="store_true",
                        help="store records without checking them against the reference")
    parser.add_argument("--json", help="write the results table as JSON here")
    parser.add_argument("--export", metavar="DIR",
                        help="after tuning, copy each task's best record into DIR, "
                             "xz-compressed and merged with records already there (CPU targets: "
                             "re-verified and re-timed here; GPU: as measured): ship it as "
                             "tuning_logs/<target key>/")
    board = parser.add_argument_group("measuring on a board through an RPC tracker")
    board.add_argument("--rpc-tracker", metavar="HOST:PORT",
                       help="RPC tracker the board's rpc_server registered with "
                            "(scripts/arm_board.sh start: 127.0.0.1:9190)")
    board.add_argument("--rpc-key", metavar="KEY",
                       help="the board's key on the tracker (emulated board: aarch64-qemu)")
    board.add_argument("--rpc-timeout", type=int, default=120, metavar="SEC",
                       help="limit of one RPC session / wait for the board (default 120; "
                            "raise it for slow boards)")
    board.add_argument("--cross-cc", default="aarch64-linux-gnu-gcc",
                       help="cross compiler for AArch64 targets (default aarch64-linux-gnu-gcc)")


def _is_cross(target) -> bool:
    """Code for another architecture than this machine's (cannot run here)."""
    import platform  # pylint: disable=import-outside-toplevel

    from .schedules.x86 import is_aarch64  # pylint: disable=import-outside-toplevel

    machine = platform.machine().lower()
    host = target.host if "gpu" in target.keys and target.host is not None else target
    if host.kind.name != "llvm":
        return False
    return is_aarch64(host) != (machine in ("aarch64", "arm64"))


def board_from_args(args, target) -> Board:
    """The board behind ``--rpc-tracker`` / ``--rpc-key`` (the tracker's spelling is checked
    before the cross compiler's presence)."""
    cross_cc = args.cross_cc if _is_cross(target) else None
    board = Board.parse(args.rpc_tracker, args.rpc_key, timeout=args.rpc_timeout,
                        cross_cc=cross_cc)
    if cross_cc and shutil.which(cross_cc) is None:
        raise FileNotFoundError(
            f"{cross_cc} not found: it links the candidates for the board "
            "(Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu), or pass --cross-cc")
    return board


def _error(message: str) -> int:
    print(f"tvm-deconv tune: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args.target if not args.target.startswith("{")
                            else json.loads(args.target))
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    board = None
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        return _error("--rpc-tracker and --rpc-key go together")
    if args.rpc_tracker:
        try:
            board = board_from_args(args, target)
        except (ValueError, FileNotFoundError) as err:
            return _error(str(err))
    elif _is_cross(target):
        return _error(f"target {target.export().get('mtriple')} cannot run on this machine: "
                      "measure on a board with --rpc-tracker HOST:PORT --rpc-key KEY "
                      "(scripts/arm_board.sh starts an emulated one)")
    if args.rest_of_model and not args.model:
        return _error("--rest-of-model needs --model (layers have no rest)")
    bundle = None
    if args.model:
        try:
            bundle = build_model(args.model, batch=args.batch, small=args.small)
        except ValueError as err:
            return _error(str(err))
        tasks = tuning.extract_tasks(bundle.mod, target, spaces)
    else:
        names = ([l.name for l in zoo.LAYERS] if args.layers == "all"
                 else [n.strip() for n in args.layers.split(",") if n.strip()])
        tasks = tuning.make_tasks([zoo.get(n).spec(args.batch) for n in names], target, spaces)
    print(f"tuning {len(tasks)} task(s), {args.trials} trials each, into {args.work_dir}")
    try:
        results = tuning.tune(tasks, target, args.work_dir, trials=args.trials,
                              cost_model=args.cost_model, verify=not args.no_verify,
                              board=board)
        if args.rest_of_model:
            results += tuning.tune(bundle.mod, target, args.work_dir, trials=args.trials,
                                   spaces=(), cost_model=args.cost_model,
                                   verify=not args.no_verify, board=board,
                                   rest_of_model=True, params=bundle.params)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every record measured so far is kept in {args.work_dir}; "
              "run the same command again to continue")
        return 130
    except BoardLost as lost:
        if lost.results:
            print(tuning.results_table(lost.results))
        print(f"tvm-deconv tune: {lost}\n(a board registers with `python -m tvm.exec.rpc_server "
              f"--tracker {args.rpc_tracker} --key {args.rpc_key}`; the emulated one with "
              "`bash scripts/arm_board.sh start`)", file=sys.stderr)
        return 3
    print(tuning.results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    logs = args.work_dir
    if args.export:
        if board is not None:
            return _error("--export re-times records on this machine's device; "
                          "export board records where the board's device is")
        # CPU records are re-verified and re-timed back to back (a shared machine's timings
        # drift during tuning); GPU records are copied as measured and verified at tuning.
        kept = tuning.export_logs(args.work_dir, args.export, tasks, target, top=1,
                                  compress=True, remeasure="gpu" not in target.keys)
        print(f"exported {sum(n for _, n in kept)} record(s) of {len(kept)} task(s) to "
              f"{args.export} (shipped logs of this target go to tuning_logs/"
              f"{tuning.target_key(target)}/)")
        logs = args.export
    print(f"use it: tvm_deconv.build(mod, target, params, tuning_logs={logs!r})")
    return 0
