"""The serve settings as command-line flags and as the operations table, derived from ``Settings``.

Each setting is declared once, in :class:`~sensorguard.service.config.Settings` (name, type,
default, help); this module turns the declarations into ``--flags`` (``serve``'s, and the broker
flags ``replay`` shares) and into the table in ``docs/operations.md`` (a test keeps the two equal;
regenerate with ``python -c "from sensorguard.service.flags import settings_table; print(settings_table())"``).
Flags are parsed as text and every value is converted and checked by ``load_settings``, so a bad
value gets the same message whether it came from a flag, the environment or the TOML file, and all
problems are reported at once.

>>> "| `batch_max` | `4096` | windows per scoring batch at most |" in settings_table()
True
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields

from sensorguard.service.config import Settings


def setting_fields() -> list[Field]:
    """The public settings, in declaration order."""
    return [f for f in fields(Settings) if not f.name.startswith("_")]


def flag_names() -> tuple[str, ...]:
    """Settings ``serve`` takes as flags (the others are TOML and environment only)."""
    return tuple(f.name for f in setting_fields() if f.metadata.get("flag"))


def shown_default(f: Field) -> str:
    """How a setting's default reads in the docs and in ``--help``."""
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    if f.default is MISSING or f.default is None:
        return "unset"
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    return str(f.default)


def add_setting_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      help_overrides: dict[str, str] | None = None, required: tuple[str, ...] = ()) -> None:
    """Add ``--name-with-dashes`` for each of ``names`` (default: every flag setting).

    Every flag defaults to None (not given), so an unset flag never overrides the TOML file or
    the environment; booleans are ``--name`` (True) and ``--no-name`` (False): a switch that only
    set True could not undo a file's or an image's ``log_json = true``. ``required``: flags that
    must be given.
    """
    by_name = {f.name: f for f in setting_fields()}
    overrides = help_overrides or {}
    for name in names or flag_names():
        f = by_name[name]
        text = overrides.get(name) or f"{_plain(f.metadata['help'])} (default {shown_default(f)})"
        option = "--" + name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif str(f.type).startswith("tuple"):  # a list: the flag repeated
            parser.add_argument(option, action="append", required=name in required, help=text)
        else:
            parser.add_argument(option, choices=f.metadata.get("choices"), required=name in required, help=text)


def settings_table() -> str:
    """The settings table of ``docs/operations.md``: setting, default, meaning."""
    lines = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for f in setting_fields():
        default = shown_default(f)
        shown = default if f.metadata.get("shown") or default == "unset" else f"`{default}`"
        lines.append(f"| `{f.name}` | {shown} | {f.metadata['help']} |")
    return "\n".join(lines)


def _plain(text: str) -> str:
    """Markdown code marks dropped for ``--help``; ``%`` escaped for argparse."""
    return text.replace("`", "").replace("%", "%%")
