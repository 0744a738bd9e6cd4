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

import logging
import re
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.target import Target

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_spec
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
    # verification needs a local device: board tuning requires --no-verify for now
    assert main(base + ["--rpc-tracker", "127.0.0.1:9190", "--rpc-key", "k"]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert main(base + ["--rpc-tracker", "nohostport", "--rpc-key", "k", "--no-verify"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_builder_export_cross_compiles_a_shared_library(tmp_path):
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)")
    from tvm_deconv.tune_command import export_shared_library  # pylint: disable=C0415

    spec = make_spec((1, 8, 4, 4), (8, 8, 4, 4), strides=2, padding=1)
    func = arm.neon_compute(spec).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), resolve_target("cortex-a72"))
    path = export_shared_library(lib, cross_cc=CROSS_CC)
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
    assert main(["tune", "--target", "llvm", "--layers", "dcgan_64_3_k4s2", "--spaces", "ours",
                 "--trials", "1", "--work-dir", str(tmp_path / "w"), "--rpc-tracker", tracker,
                 "--rpc-key", key, "--no-verify", "--json", str(out)]) == 0
    import json  # pylint: disable=import-outside-toplevel

    rows = json.loads(out.read_text())
    assert rows and rows[0]["best_ms"] is not None, rows


BOARD_TRACKER = ("127.0.0.1", 9190)
BOARD_KEY = "aarch64-qemu"


@pytest.fixture
def board():
    """A session on the emulated board (scripts/arm_board.sh start); skips when unavailable."""
    import os  # pylint: disable=import-outside-toplevel

    from tvm import rpc  # pylint: disable=import-outside-toplevel

    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        pytest.skip("no qemu-aarch64 binfmt_misc entry (binfmt_misc not mounted or qemu-user-"
                    "static missing; needs root): run `bash scripts/arm_board.sh start`")
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found (apt-get install gcc-aarch64-linux-gnu)")
    try:
        return rpc.connect_tracker(*BOARD_TRACKER).request(BOARD_KEY, session_timeout=120)
    except Exception as err:  # pylint: disable=broad-except
        pytest.skip(f"no board {BOARD_KEY} at tracker {BOARD_TRACKER}: {err} "
                    "(run `bash scripts/arm_board.sh start`)")


@pytest.mark.board
@pytest.mark.parametrize("cout", [16, 1], ids=["oc_mode", "w_mode"])
def test_neon_build_runs_on_the_board(board, cout, tmp_path):
    spec = make_spec((1, 8, 5, 5), (8, cout, 4, 4), strides=2, padding=1)
    data, weight = random_inputs(spec, seed=2)
    bias = np.random.default_rng(0).standard_normal(cout).astype("float32")
    ex = tvm_deconv.build(_module(spec, bias=True, act=relax.op.nn.relu), "cortex-a72",
                          {"w": weight, "b": bias})
    path = tmp_path / "deconv.so"
    ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(CROSS_CC))
    board.upload(str(path))
    lib = board.load_module("deconv.so")
    dev = board.cpu()
    vm = relax.VirtualMachine(lib, dev)
    out = vm["main"](tvm.runtime.tensor(data, dev)).numpy()
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5
