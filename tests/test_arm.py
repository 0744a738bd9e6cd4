"""The AArch64 NEON implementation (``arm_cpu.decomposed``) without a board.

* selection: AArch64 llvm targets get it; 32-bit ARM and float16 fall through to cpu.generic;
* cross-compiling for the ``aarch64`` / ``cortex-a72`` presets emits NEON ``fmla v.4s`` in the
  conv kernel and ``export_library`` with the aarch64 cross compiler makes an AArch64 ELF
  (skipped when ``aarch64-linux-gnu-gcc`` is missing: apt package ``gcc-aarch64-linux-gnu``);
* numerics: this x86 machine cannot run AArch64 code, so the *same* NEON pack / compute /
  schedule (4 lanes, NEON register tiles) is registered for the host target and checked
  against the float64 reference through the whole Relax pipeline (fused epilogues included).

Runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir
from tvm.target import Target

import tvm_deconv
from tvm_deconv import strategy, tuning
from tvm_deconv.plan import make_spec
from tvm_deconv.rpc import Board, BoardLost
from tvm_deconv.schedules import arm
from tvm_deconv.schedules.x86 import NEON, X86, x86_layout
from tvm_deconv.strategy import CONV_TRANSPOSE, Implementation
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

HOST = resolve_target("llvm")
CROSS_CC = "aarch64-linux-gnu-gcc"
FMLA_4S = re.compile(r"fmla\s+v\d+\.4s")


def _module(spec, bias=False, act=None):
    return transposed_conv_module(spec, bias=bias, activation=act)


def _functions_asm(ex) -> dict[str, str]:
    """Assembly of a Relax Executable's compiled kernels, per function label.

    ``ex.mod`` is the VM executable (no assembly of its own); the LLVM module holding the
    PrimFuncs is its import, whose ``inspect_source("asm")`` works for foreign targets too.
    """
    llvm = [m for m in ex.mod.imports if m.kind == "llvm"]
    assert llvm, [m.kind for m in ex.mod.imports]
    funcs, cur = {}, None
    for m in llvm:
        for line in m.inspect_source("asm").splitlines():
            label = re.match(r"^([A-Za-z_][\w.$]*):", line)
            if label:
                cur = label.group(1)
            if cur is not None:
                funcs.setdefault(cur, []).append(line)
    return {k: "\n".join(v) for k, v in funcs.items()}


# ---------------------------------------------------------------------------------------------
# Selection


@pytest.mark.parametrize("preset", ["aarch64", "cortex-a53", "cortex-a72", "cortex-a76"])
def test_aarch64_presets_select_neon(preset):
    spec = make_spec((1, 8, 4, 4), (8, 16, 4, 4), strides=2, padding=1)
    sel = strategy.select(CONV_TRANSPOSE, spec, resolve_target(preset))
    assert sel.implementation.name == "arm_cpu.decomposed", sel.reason()


def test_neon_declines_arm32_and_float16_and_x86_declines_arm():
    spec = make_spec((1, 8, 4, 4), (8, 16, 4, 4), strides=2, padding=1)
    arm32 = Target({"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"]})
    sel = strategy.select(CONV_TRANSPOSE, spec, arm32)
    assert sel.implementation.name == "cpu.generic"
    assert "not AArch64" in sel.reason()
    spec16 = make_spec((1, 8, 4, 4), (8, 16, 4, 4), strides=2, padding=1, dtype="float16")
    sel = strategy.select(CONV_TRANSPOSE, spec16, resolve_target("cortex-a72"))
    assert sel.implementation.name == "cpu.generic"
    assert strategy.get("x86.decomposed").applies_to(spec, resolve_target("aarch64"))
    assert strategy.get("arm_cpu.decomposed").applies_to(spec, HOST)  # keys: no arm_cpu


def test_neon_layout_is_fixed_and_sized_for_32_registers():
    spec = make_spec((1, 64, 8, 8), (64, 32, 4, 4), strides=2, padding=1)
    # The NEON workload is the same whatever target is current (tuning/cross builds on x86).
    plain = arm.neon_compute(spec)
    with resolve_target("x86-avx512"):
        lay = x86_layout(spec, isa=NEON)
        tvm.ir.assert_structural_equal(arm.neon_compute(spec), plain)
        assert x86_layout(spec, isa=X86).lanes == 16
    assert lay.lanes == 4 and lay.mode == "oc"
    obt, cols = lay.tile
    assert obt == 4 and obt * cols <= 20  # accumulators; + 4 weight vectors + broadcasts
    # FSRCNN-like single output channel: w mode, 4-wide column vectors.
    lay = x86_layout(make_spec((1, 16, 8, 8), (16, 1, 9, 9), strides=3, padding=4), isa=NEON)
    assert lay.mode == "w" and lay.lanes == 4
    ot, rh, v, _ = lay.tile
    assert ot * rh * v <= NEON.acc_budget


def test_bench_reports_the_neon_workspace():
    """The NEON kernel's padded data copy and packed weight are reported (not 0) and sized for
    NEON's layout whatever the host."""
    from tvm_deconv.bench import _workspace  # pylint: disable=import-outside-toplevel

    spec = make_spec((1, 64, 8, 8), (64, 30, 4, 4), strides=2, padding=1)
    reported = _workspace(spec, resolve_target("cortex-a72"))
    assert reported == arm.neon_workspace_bytes(spec) > 64 * 10 * 10 * 4  # >= padded input


# ---------------------------------------------------------------------------------------------
# Cross-compiling


@pytest.mark.parametrize("preset", ["aarch64", "cortex-a72"])
@pytest.mark.parametrize("cout", [32, 1], ids=["oc_mode", "w_mode"])
def test_cross_compile_emits_neon_fmla(preset, cout, caplog):
    spec = make_spec((1, 16, 6, 6), (16, cout, 4, 4), strides=2, padding=1)
    _, weight = random_inputs(spec)
    bias = np.ones(cout, "float32")
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        ex = tvm_deconv.build(_module(spec, bias=True, act=relax.op.nn.relu), preset,
                              {"w": weight, "b": bias})
    assert "failed" not in caplog.text and "falls back" not in caplog.text, caplog.text
    funcs = _functions_asm(ex)
    conv = {name: asm for name, asm in funcs.items() if "conv" in name and "transpose" in name}
    assert conv, sorted(funcs)
    assert any(FMLA_4S.search(asm) for asm in conv.values()), "no NEON fmla v.4s in the kernel"
    # weight packing was folded at compile time: no packing kernel in the library
    assert not any("pack_weight" in name for name in funcs), sorted(funcs)


def test_export_library_cross_compiled(tmp_path):
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)")
    spec = make_spec((1, 8, 4, 4), (8, 8, 4, 4), strides=2, padding=1)
    _, weight = random_inputs(spec)
    ex = tvm_deconv.build(_module(spec), "cortex-a72", {"w": weight})
    path = tmp_path / "deconv_aarch64.so"
    ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(CROSS_CC))
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # e_machine EM_AARCH64


# ---------------------------------------------------------------------------------------------
# Numerics of the NEON layout, run on the host


@pytest.fixture
def neon_on_host(monkeypatch):
    """The NEON pack/compute/schedule registered for the host CPU (ahead of x86.decomposed)."""
    impl = Implementation(
        name="test.neon_on_host", target_keys=("cpu",), priority=1000,
        compute=arm.neon_compute, schedule=arm.schedule_neon, pack=arm.neon_pack,
        predicate=lambda spec, target: arm.supports_float32(spec, "NEON"))
    impls = strategy.implementations(CONV_TRANSPOSE)  # loads the built-in registrations
    monkeypatch.setitem(strategy._REGISTRY, CONV_TRANSPOSE,  # pylint: disable=W0212
                        [impl] + impls)
    return impl


# Cover every NEON tile shape: oc mode with 4 / 2 / 1 channel vectors per tile, padded lanes
# (Cout 2, 5, 9), w mode, ragged phases, k < s, groups, depthwise, dilation, 1-d, 3-d, batch.
NEON_CONFIGS = [
    ((1, 16, 5, 5), (16, 16, 4, 4), dict(strides=2, padding=1)),                    # obt 4
    ((2, 8, 6, 5), (8, 24, 3, 3), dict(strides=2, padding=1, output_padding=1)),    # obt 2
    ((1, 10, 5, 5), (10, 20, 5, 3), dict(strides=(3, 2), padding=(2, 1),
                                         output_padding=(1, 0))),                  # obt 1
    ((1, 6, 7, 6), (6, 1, 9, 9), dict(strides=3, padding=4, output_padding=2)),     # w mode
    ((1, 6, 4, 9), (6, 2, 3, 3), dict(strides=2, padding=1)),                       # Cout 2
    ((1, 6, 4, 5), (6, 5, 2, 2), dict(strides=3, padding=0)),                       # k < s
    ((1, 8, 5, 4), (8, 9, 3, 3), dict(strides=2, padding=(0, 1, 2, 0), groups=2)),  # groups
    ((1, 12, 6, 6), (12, 1, 4, 4), dict(strides=2, padding=1, groups=12)),          # depthwise
    ((1, 8, 6, 6), (8, 9, 3, 3), dict(strides=2, padding=2, dilation=2)),          # dilation
    ((2, 8, 9), (8, 16, 5), dict(strides=3, padding=1, output_padding=1)),          # 1-d
    ((1, 4, 3, 4, 3), (4, 8, 3, 2, 4), dict(strides=2, padding=1)),                 # 3-d
]


def _host_run(spec, bias=None, act=None, caplog=None):
    data, weight = random_inputs(spec, seed=5)
    params = {"w": weight}
    if bias is not None:
        params["b"] = bias
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        ex = tvm_deconv.build(_module(spec, bias is not None, act), HOST, params)
    assert "failed" not in caplog.text and "falls back" not in caplog.text, caplog.text
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return data, weight, vm["main"](tvm.runtime.tensor(data)).numpy()


@pytest.mark.parametrize("data_shape,weight_shape,attrs", NEON_CONFIGS,
                         ids=[f"cfg{i}" for i in range(len(NEON_CONFIGS))])
def test_neon_schedule_matches_reference_on_host(neon_on_host, data_shape, weight_shape, attrs,
                                                 caplog):
    spec = make_spec(data_shape, weight_shape, **attrs)
    assert strategy.select(CONV_TRANSPOSE, spec, HOST).implementation is neon_on_host
    data, weight, out = _host_run(spec, caplog=caplog)
    ref = conv_transpose_reference(data, weight, spec)
    assert out.shape == ref.shape
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("cout", [16, 3])
def test_neon_schedule_fused_bias_relu_on_host(neon_on_host, cout, caplog):
    spec = make_spec((1, 8, 5, 6), (8, cout, 4, 4), strides=2, padding=1)
    bias = np.random.default_rng(1).standard_normal(cout).astype("float32")
    data, weight, out = _host_run(spec, bias=bias, act=relax.op.nn.relu, caplog=caplog)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5


# ---------------------------------------------------------------------------------------------
# Board workflow: `tvm-deconv tune --rpc-tracker` and the emulated board


def test_tune_command_rejects_unrunnable_setups(tmp_path, capsys):
    from tvm_deconv.cli import main  # pylint: disable=import-outside-toplevel

    base = ["tune", "--target", "cortex-a72", "--layers", "dcgan_64_3_k4s2",
            "--work-dir", str(tmp_path / "w")]
    assert main(base) == 2  # aarch64 cannot be measured on this machine
    assert "--rpc-tracker" in capsys.readouterr().err
    assert main(base + ["--rpc-tracker", "nohostport", "--rpc-key", "k"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    if shutil.which(CROSS_CC) is None:
        return
    # no tracker there: exit 3 at once, naming the board and how to register one
    tracker = f"127.0.0.1:{_free_port()}"
    assert main(base + ["--rpc-tracker", tracker, "--rpc-key", "k"]) == 3
    err = capsys.readouterr().err
    assert f"board 'k' at tracker {tracker}" in err and "tracker unreachable" in err, err
    assert f"rpc_server --tracker {tracker} --key k" in err, err


def test_builder_export_cross_compiles_a_shared_library():
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)")
    spec = make_spec((1, 8, 4, 4), (8, 8, 4, 4), strides=2, padding=1)
    func = arm.neon_compute(spec).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), resolve_target("cortex-a72"))
    path = Board("127.0.0.1", 1, "k", cross_cc=CROSS_CC).export(lib)
    header = open(path, "rb").read(20)
    assert path.endswith(".so") and header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def _free_port() -> int:
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def host_rpc_tracker():
    """An RPC tracker and a host (x86) RPC server on 127.0.0.1: the board path, natively."""
    import os  # pylint: disable=import-outside-toplevel
    import signal  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    from tvm import rpc  # pylint: disable=import-outside-toplevel

    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")
    port, key = _free_port(), "tvm-deconv-host"
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                               "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        sport = _free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
             str(sport), "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{port}",
             "--key", key], start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        for _ in range(60):
            if any(proc.poll() is not None for proc in procs):
                pytest.skip("the local RPC tracker/server exited")
            try:
                if key in str(rpc.connect_tracker("127.0.0.1", port).text_summary()):
                    break
            except Exception:  # pylint: disable=broad-except
                pass
            time.sleep(0.5)
        else:
            pytest.skip("the local RPC tracker/server did not come up")
        yield f"127.0.0.1:{port}", key
    finally:
        for proc in reversed(procs):  # by process group: the server forks a worker
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.mark.slow
def test_tune_command_measures_through_an_rpc_tracker(host_rpc_tracker, tmp_path):
    """``tvm-deconv tune --rpc-tracker`` end to end, with the host as the 'board'."""
    from tvm_deconv.cli import main  # pylint: disable=import-outside-toplevel

    tracker, key = host_rpc_tracker
    out = tmp_path / "results.json"
    # (default and ours: on AVX-512 hosts x86.phase_tile takes the layer, without an ours space)
    assert main(["tune", "--target", "llvm", "--layers", "dcgan_64_3_k4s2", "--spaces",
                 "default,ours", "--trials", "1", "--work-dir", str(tmp_path / "w"),
                 "--rpc-tracker", tracker, "--rpc-key", key, "--no-verify", "--json",
                 str(out)]) == 0
    import json  # pylint: disable=import-outside-toplevel

    rows = json.loads(out.read_text())
    assert rows and rows[0]["best_ms"] is not None, rows


# ---------------------------------------------------------------------------------------------
# The emulated board (scripts/arm_board.sh): skipped unless it is up or TVM_DECONV_BOARD=1
#
# Bringing the board up the first time takes 5-20 minutes (debootstrap and pip under qemu), so
# the tests never do it unasked: they use a board already registered to the tracker, and start
# one themselves only with TVM_DECONV_BOARD=1 (root; later starts take ~30 s).

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "arm_board.sh"
BOARD = Board("127.0.0.1", 9190, "aarch64-qemu", cross_cc=CROSS_CC)
START = f"sudo bash {SCRIPT.relative_to(REPO)} start"


def _start_board() -> None:
    """``arm_board.sh start``; skips where this machine cannot host the board (exit 3)."""
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                          timeout=1800, check=False)
    if proc.returncode == 3:
        pytest.skip(f"this machine cannot host the emulated board: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"{START} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="session")
def board():
    """The emulated board; skips, saying how to get one, when it is not registered."""
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found (apt-get install gcc-aarch64-linux-gnu)")
    problem = BOARD.problem()
    if problem is not None and os.environ.get("TVM_DECONV_BOARD") == "1":
        _start_board()
        problem = BOARD.problem()
    if problem is not None:
        pytest.skip(f"{BOARD}: {problem}. Start it with `{START}` (first time 5-20 min), or "
                    "set TVM_DECONV_BOARD=1 to let the tests start it")
    return BOARD


@pytest.mark.board
@pytest.mark.parametrize("cout", [16, 1], ids=["oc_mode", "w_mode"])
def test_neon_build_runs_on_the_board(board, cout):
    spec = make_spec((1, 8, 5, 5), (8, cout, 4, 4), strides=2, padding=1)
    data, weight = random_inputs(spec, seed=2)
    bias = np.random.default_rng(0).standard_normal(cout).astype("float32")
    ex = tvm_deconv.build(_module(spec, bias=True, act=relax.op.nn.relu), "cortex-a72",
                          {"w": weight, "b": bias})
    session, lib = board.load(ex)
    dev = session.cpu()
    out = relax.VirtualMachine(lib, dev)["main"](tvm.runtime.tensor(data, dev)).numpy()
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5


@pytest.mark.board
def test_verifier_runs_candidates_on_the_board(board):
    """Board verification: the reference is computed here, the candidate runs on the board;
    a kernel computing another conv of the same shapes (padding shifted) is caught."""
    target = resolve_target("cortex-a72")
    spec = make_spec((1, 8, 5, 5), (8, 4, 4, 4), strides=2, padding=1)
    shifted = make_spec((1, 8, 5, 5), (8, 4, 4, 4), strides=2, padding=(0, 0, 2, 2))
    task, wrong = (tuning.make_tasks([s], target, spaces=[tuning.STOCK])[0]
                   for s in (spec, shifted))
    verifier = tuning.Verifier(task, target, seed=3, board=board)
    assert verifier.error(s_tir.Schedule(task.mod)) < 1e-5
    assert verifier.error(s_tir.Schedule(wrong.mod)) > 0.1


@pytest.mark.board
def test_tune_command_on_the_board_writes_verified_records(board, tmp_path, capsys):
    """``tvm-deconv tune --rpc-tracker``: measured on the board, verified on the board."""
    from tvm_deconv.cli import main  # pylint: disable=import-outside-toplevel

    out, work = tmp_path / "results.json", tmp_path / "w"
    assert main(["tune", "--target", "cortex-a72", "--layers", "dcgan_64_3_k4s2",
                 "--spaces", f"{tuning.DEFAULT},{tuning.STOCK}", "--trials", "2",
                 "--work-dir", str(work), "--rpc-tracker", f"{board.host}:{board.port}",
                 "--rpc-key", board.key, "--json", str(out)]) == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())
    assert [r["space"] for r in rows] == [tuning.DEFAULT, tuning.STOCK]
    assert all(r["trials_run"] >= 1 and r["best_ms"] > 0 and r["rejected"] == 0 for r in rows)
    records = (work / tuning.RECORD_FILE).read_text().splitlines()
    assert len(records) == sum(r["trials_run"] for r in rows)
    tuning.open_database(work)  # the log validates


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.board
def test_board_dropping_mid_tuning_keeps_records_and_names_the_board(board, tmp_path):
    """Kill the board's RPC server (its process group) while the second task is being
    tuned: the run ends within a bounded time with BoardLost naming the board, the first
    task's records stay, the log still loads; then the board is restarted."""
    if os.environ.get("TVM_DECONV_BOARD") != "1" or os.geteuid() != 0:
        pytest.skip("kills and restarts the board's server: runs as root with TVM_DECONV_BOARD=1")
    pgid_file = Path(os.environ.get("BOARD_DIR", "/tmp/tvm-board")) / "server.pgid"
    target = resolve_target("cortex-a72")
    first, second = (make_spec((1, 8, 4, 4), (8, c, 4, 4), strides=2, padding=1) for c in (4, 8))
    tasks = tuning.make_tasks([first, second], target, spaces=[tuning.STOCK])
    work = tmp_path / "w"
    killed = threading.Event()

    def kill_when_second_task_starts():
        # the second workload is committed when its task starts; its first batch then builds
        while _lines(work / tuning.WORKLOAD_FILE) < 2 or _lines(work / tuning.RECORD_FILE) < 1:
            time.sleep(0.2)
        time.sleep(2)
        kept.append(_lines(work / tuning.RECORD_FILE))
        os.killpg(int(pgid_file.read_text()), signal.SIGTERM)
        killed.set()

    kept: list[int] = []
    watcher = threading.Thread(target=kill_when_second_task_starts, daemon=True)
    watcher.start()
    try:
        with pytest.raises(BoardLost) as lost:
            tuning.tune(tasks, target, work, trials=2, progress=False, seed=0, board=board)
        ended = time.monotonic()
        assert killed.wait(0), "the run ended before the board was killed"
        message = str(lost.value)
        assert f"{board}" in message and "last runner error" in message, message
        assert [r.space for r in lost.value.results] == [tuning.STOCK, tuning.STOCK]
        done, dropped = lost.value.results
        assert done.trials_run >= 1 and done.best_ms > 0 and dropped.trials_run == 0
        assert _lines(work / tuning.RECORD_FILE) == kept[0] == done.trials_run
        tuning.open_database(work)
    finally:
        if killed.is_set():
            _start_board()
    assert time.monotonic() - ended < 600  # the restart, not a hang
