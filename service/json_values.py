"""Numbers read from a JSON file someone may have edited: a JSON ``true`` is not 1, ``"4"`` not 4.

``float(true)`` is 1.0 and ``int(4.7)`` is 4 in Python, so a hand-edited ``bundle.json`` with
``"threshold": true`` or ``"hop": 4.7`` loaded as a line of 1.0 or a hop of 4 without a word (a
walk found ``level.q_limit: true`` read as 1.0). These say what the file holds instead.

>>> number(2, "limit"), whole(4.0, "hop")
(2.0, 4)
>>> number(True, "limit")
Traceback (most recent call last):
ValueError: limit must be a number, got true/false
"""

from __future__ import annotations

from typing import Any, TypeGuard


def json_type(value: Any) -> str:
    """What a JSON value is, in the file's words."""
    names = {bool: "true/false", type(None): "null", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), repr(value)[:40])


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is a JSON number (a ``bool`` is an ``int`` to Python, not to JSON)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: Any, what: str) -> float:
    """``value`` as a float; ValueError naming ``what`` unless it is a JSON number."""
    if not is_number(value):
        raise ValueError(f"{what} must be a number, got {json_type(value)}")
    return float(value)


def whole(value: Any, what: str) -> int:
    """``value`` as an int; ValueError naming ``what`` unless it is a whole JSON number (4 or 4.0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{what} must be a whole number, got {json_type(value)}")
