"""The wheel installs under the project's own import names, and nothing named ``service`` or ``training``.

Built with pip (as a user's ``pip install .`` builds it) and installed with ``--no-deps`` into a
fresh venv that sees this environment's packages (``--system-site-packages``, and a ``.pth`` naming
this interpreter's own site-packages: run from a venv, the first alone sees the base interpreter's,
which may hold none of the dependencies), so torch is not fetched again; everything is then imported
from a folder holding a foreign ``service`` package, the collision the namespace exists to avoid.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(args: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_under_sensorguard_and_works_beside_a_foreign_service_package(tmp_path):
    source = tmp_path / "source"  # built from a copy: setuptools writes build/ beside the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("sensorguard", "service", "training"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("sensorguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"sensorguard"}, tops
    assert "sensorguard/service/daemon.py" in names and "sensorguard/training/train.py" in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    kept = run([python, "-c", "import site; print(site.getsitepackages()[0])"], cwd=tmp_path).stdout.strip()
    Path(kept, "parent_environment.pth").write_text("".join(f"{d}\n" for d in site.getsitepackages()))
    run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # a project of the user's with its own "service" package
    (elsewhere / "service").mkdir(parents=True)
    (elsewhere / "service" / "__init__.py").write_text("FOREIGN = True\n")
    code = (
        "import service, sensorguard, sensorguard.service.daemon, sensorguard.training.train;"
        "from sensorguard.cli import main;"
        "print(service.FOREIGN, sensorguard.service.daemon.__file__, sensorguard.training.train.__file__)"
    )
    out = run([python, "-c", code], cwd=elsewhere).stdout.split()
    assert out[0] == "True"  # the user's own package is untouched ...
    assert all(str(venv) in path for path in out[1:]), out  # ... and sensorguard comes from the wheel
    version = run([venv / "bin" / "sensorguard", "--version"], cwd=elsewhere).stdout
    assert version.strip() == "sensorguard 0.1.0"
    assert "serve" in run([python, "-m", "sensorguard", "--help"], cwd=elsewhere).stdout
