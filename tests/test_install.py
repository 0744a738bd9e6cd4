"""schedules/ and targets/ install as tvm_deconv.schedules / tvm_deconv.targets, both ways."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import tvm_deconv.schedules as s, tvm_deconv.targets as t, importlib.util as u; "
         "print(s.__file__); print(t.__file__); "
         "print(u.find_spec('schedules') is None and u.find_spec('targets') is None)")


def install_and_probe(tmp_path: Path, editable: bool) -> list[str]:
    src = tmp_path / "src"
    if editable:
        src = REPO
    else:
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", "*.egg-info", "build", "__pycache__", ".hypothesis", ".dev*", "tests"))
    env_dir = tmp_path / "venv"
    # System site-packages give the venv TVM without downloading it again.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    cmd += ["-e", str(src)] if editable else [str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip install failed:\n{done.stdout}\n{done.stderr}")
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.split()


def test_normal_install_maps_subpackages(tmp_path):
    schedules, targets, no_bare_names = install_and_probe(tmp_path, editable=False)
    site = str(tmp_path / "venv")
    assert schedules.startswith(site) and schedules.endswith("tvm_deconv/schedules/__init__.py")
    assert targets.startswith(site) and targets.endswith("tvm_deconv/targets/__init__.py")
    assert no_bare_names == "True"


def test_editable_install_maps_subpackages(tmp_path):
    schedules, targets, no_bare_names = install_and_probe(tmp_path, editable=True)
    assert schedules == str(REPO / "schedules" / "__init__.py")
    assert targets == str(REPO / "targets" / "__init__.py")
    assert no_bare_names == "True"
