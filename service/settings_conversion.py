"""Raw setting values as their setting's type: TOML values, environment text and flags alike.

Split from :mod:`sensorguard.service.config`, whose ``merge_settings`` converts each value of each
layer with :func:`convert` before :func:`~sensorguard.service.settings_checks.validate` checks the
merged settings. A value that does not convert is a problem naming where it came from, not an
exception, so every bad value is reported at once.

>>> problems = []
>>> convert("metrics_port", "9", (int, False), "SENSORGUARD_METRICS_PORT", problems, from_text=True)
9
>>> convert("tls_insecure", "maybe", (bool, False), "flag tls_insecure", problems, from_text=False) is BAD, problems
(True, ["flag tls_insecure: expected bool, got 'maybe'"])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sensorguard.service.json_values import is_number

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

BAD = object()  # what convert returns for a value it could not convert (the problem is noted)


def convert(
    key: str, value: Any, kind: tuple[type, bool], where: str, problems: list[str], from_text: bool
) -> Any:
    """A raw value (TOML, env text or flag) as the field's type, or BAD with a problem noted."""
    base, optional = kind
    if base is tuple:  # a list of text: TOML list, repeated flag, or comma-separated text
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            problems.append(f"{where}: expected a list of text, got {value!r}")
            return BAD
        return tuple(v for v in items if v)
    if isinstance(value, str) and base is not str:
        from_text = True
    if from_text and isinstance(value, str):
        text = value.strip()
        if optional and (not text or (base is not str and text.lower() in ("none", "null"))):
            return None
        try:
            if base is bool:
                if text.lower() in _TRUE | _FALSE:
                    return text.lower() in _TRUE
                raise ValueError
            if base is int:
                return int(text)
            if base is float:
                return _finite(float(text))
            return text
        except ValueError:
            problems.append(f"{where}: expected {base.__name__}, got {value!r}")
            return BAD
    if key == "mqtt_version" and is_number(value):
        value = f"{value:g}"  # mqtt_version = 5 in TOML
    ok = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and is_number(value))
        or (base is str and isinstance(value, str | Path))
        or (optional and value is None)
    )
    if not ok:
        problems.append(f"{where}: expected {base.__name__}, got {type(value).__name__} {value!r}")
        return BAD
    if base is float and value is not None:
        try:
            return _finite(float(value))
        except ValueError:
            problems.append(f"{where}: expected a finite number, got {value!r}")
            return BAD
    return str(value) if isinstance(value, Path) else value


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"not finite: {x}")
    return x
