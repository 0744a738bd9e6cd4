"""The examples run as written (as subprocesses, with small sizes and budgets) and report
matching outputs.  examples/tune_on_board.py needs a board and is not run here."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} "
                              "(pip install 'tvm-deconv[onnx]')")


def _run(script, *argv, cwd=None):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *argv], capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@_needs("torch")
def test_compile_pytorch_dcgan():
    out = _run("compile_pytorch_dcgan.py", "--ngf", "4", "--repeat", "1")
    assert "outputs match: yes" in out and "tvm-deconv" in out


@_needs("torch", "onnx")
def test_compile_onnx_fsrcnn():
    out = _run("compile_onnx_fsrcnn.py", "--size", "16", "--repeat", "1")
    assert "outputs match: yes" in out and "(1, 1, 48, 48)" in out


def test_compare_with_tvm_default():
    out = _run("compare_with_tvm_default.py", "--models", "fsrcnn_x3", "--repeat", "1")
    assert "all outputs match TVM's default: yes" in out


# MetaSchedule imports TVM's tensor intrinsics in the tuner and in every build/run worker:
# about 80 s of CPU each on the 2-core dev machine, so even a one-trial run takes minutes.
@pytest.mark.slow
def test_tune_layer(tmp_path):
    out = _run("tune_layer.py", "--layer", "dcgan_64_3_k4s2", "--spaces", "default",
               "--trials", "1", "--repeat", "1", "--work-dir", str(tmp_path / "tuned"))
    assert "outputs match the reference: yes" in out
    assert (tmp_path / "tuned" / "database_tuning_record.json").stat().st_size > 0
