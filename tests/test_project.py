"""Project-level promises: the README's two commands, CI running the test one, the runtime's imports."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(pip install torch==2\.13\.0 && .+?)\n```", text)


def test_readme_has_exactly_two_setup_commands_with_torch_first():
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("sensorguard demo") and "pytest" in tests
    for command in commands:
        assert command.startswith("pip install torch==2.13.0 && pip install -e ")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def test_runtime_never_imports_lightning_pandas_or_matplotlib():
    """Importing any runtime module loads none of the training stack: the daemon starts fast and small."""
    modules = sorted(p.stem for p in (ROOT / "service").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys;"
        f"[importlib.import_module('sensorguard.service.' + m) for m in {modules!r}];"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'pandas',"
        " 'matplotlib') or m.startswith('sensorguard.training')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_package_never_imports_the_training_package():
    """service/ is what the daemon runs: not even a lazy import may reach up into training/."""
    import ast

    offenders = []
    for path in sorted((ROOT / "service").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names
                          if n == "training" or n.startswith(("training.", "sensorguard.training"))]
    assert offenders == []


def test_every_docstring_example_in_service_and_training_holds():
    """Every module's doctests, run: two in training went stale unseen (a threshold that moved by a
    rounding, an alert count changed by a fix), because only some modules' doctests had a test."""
    import doctest
    import importlib
    import pkgutil

    import sensorguard.service
    import sensorguard.training

    ran = 0
    for package in (sensorguard.service, sensorguard.training):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            result = doctest.testmod(module)
            assert result.failed == 0, module.__name__
            ran += result.attempted
    assert ran >= 60
