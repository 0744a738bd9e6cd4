"""TVM's runtime pool gets one thread per physical core (TVM halves x86 hardware threads)."""

import os
import subprocess
import sys

from tvm_deconv.threads import configure_runtime_threads, physical_cores

PROBE = ("import tvm_deconv, os; from tvm_deconv.threads import runtime_threads; "
         "print(os.environ.get('TVM_NUM_THREADS'), runtime_threads())")


def _probe(env: dict) -> list:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out


def test_pool_gets_every_physical_core():
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS",
                                                            "OMP_NUM_THREADS")}
    assert _probe(env) == [str(physical_cores())] * 2


def test_user_setting_stands():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["TVM_NUM_THREADS"] = "1"
    assert _probe(env) == ["1", "1"]


def test_configure_leaves_a_set_variable(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    assert configure_runtime_threads() is None
    assert "TVM_NUM_THREADS" not in os.environ
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_runtime_threads() == physical_cores() >= 1
    assert os.environ["TVM_NUM_THREADS"] == str(physical_cores())
