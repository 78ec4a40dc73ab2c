"""sensorguard: anomaly detection for industrial sensor streams.

The installed import names are the project's own: ``sensorguard.service`` (the runtime: network,
bundle, scorer, daemon; never imports Lightning) and ``sensorguard.training`` (the offline
pipeline). In the repository they are the folders ``service/`` and ``training/`` beside this one;
the build backend maps them under this package (``pyproject.toml``), so no top-level ``service``
or ``training`` package is installed to collide with another project's.

In a source checkout that was not installed, the two folders are found through this package's
search path, so ``python -m sensorguard`` works from the repository root as well.
"""

from pathlib import Path

__version__ = "0.1.0"

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "service" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__: service/, training/ as subpackages
