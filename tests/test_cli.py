"""The README's main job, as a user runs it."""

import subprocess
import sys


def test_demo_prints_matching_outputs_and_a_speedup():
    done = subprocess.run([sys.executable, "-m", "tvm_deconv.cli", "demo", "--repeat", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outputs match: yes" in done.stdout
    speedup = [line for line in done.stdout.splitlines() if "speedup" in line]
    assert speedup and float(speedup[0].rsplit(" ", 1)[1].rstrip("x")) > 0


def test_cli_rejects_unknown_target():
    done = subprocess.run([sys.executable, "-m", "tvm_deconv.cli", "demo", "--target", "foo"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: unknown target 'foo'" in done.stderr and "Traceback" not in done.stderr
