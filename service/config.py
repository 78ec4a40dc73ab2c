"""One frozen :class:`Settings` for ``serve`` and ``demo``, loaded and validated in one place.

Precedence, lowest first: defaults < TOML file < environment (``SENSORGUARD_<UPPER_NAME>``) <
flags. A TOML file holds the settings at top level or in a ``[sensorguard]`` table (then other
tables are left alone, so the file can be shared). Every problem is collected and reported at
once in one :class:`ConfigError`: fixing a deployment one error per restart is miserable.

The MQTT password is never a setting or a flag (flags show up in ``ps``): it comes from
``password_file`` or the ``SENSORGUARD_MQTT_PASSWORD`` environment variable, is read only when
connecting (:meth:`Settings.password`), and never appears in :meth:`Settings.redacted`.

>>> s = load_settings({"model": None, "registry": "/", "name": "pumps"}, {"SENSORGUARD_METRICS_PORT": "9"})
>>> s.metrics_port, s.broker_parts(), s.alert_topic("site-a/pump-7")
(9, ('mqtt', '127.0.0.1', 1883, False), 'sensorguard/alerts/site-a/pump-7')
"""

from __future__ import annotations

import difflib
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sensorguard.service.settings_checks import DEFAULT_PORTS, hide_credentials, validate
from sensorguard.service.settings_conversion import BAD, convert

ENV_PREFIX = "SENSORGUARD_"
PASSWORD_ENV = "SENSORGUARD_MQTT_PASSWORD"


class ConfigError(ValueError):
    """Invalid settings; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


def _default_client_id() -> str:
    # Computed when Settings is built, not at import: a stable id per host keeps the MQTT session.
    return f"sensorguard-{socket.gethostname() or 'host'}"


def setting(default: Any = None, help: str = "", *, shown: str | None = None, flag: bool = True,
            choices: tuple[str, ...] | None = None, factory: Any = None) -> Any:
    """One setting, declared once: its default, its help (the ``--help`` line and the operations
    table), how its default reads in the docs (``shown``), whether ``serve`` has a flag for it.

    Its type is the field's annotation, its TOML key the field name, its environment variable
    ``SENSORGUARD_<NAME>``; :func:`~sensorguard.service.settings_checks.validate` checks its value,
    once, whatever layer it came from.
    """
    meta = {"help": help, "shown": shown, "flag": flag, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Everything ``serve`` needs. Build it with :func:`load_settings`, which validates."""

    model: str | None = setting(None, "a bundle directory to serve (give either `model`, or `registry` and `name`)")
    registry: str | None = setting(None, "registry root; serve its `CURRENT` version of `name` and follow promotions")
    name: str | None = setting(None, "model name in the registry")
    reload_poll_s: float = setting(
        5.0, "how often the registry's `CURRENT` is checked for a new version, seconds; SIGHUP checks at once")
    shadow_report_s: float = setting(
        60.0, "how often the live alert counts of a shadow model (`models shadow`) and `CURRENT` are written to "
        "the registry, seconds")
    broker: str = setting("mqtt://127.0.0.1:1883", "broker URL; `mqtts://` for TLS; default ports 1883 / 8883")
    mqtt_version: str = setting("5", "MQTT protocol version: `5` or `3.1.1`", choices=("5", "3.1.1"))
    client_id: str = setting(help="MQTT client id; the persistent session is bound to it: keep it stable",
                             shown="sensorguard-<hostname>", factory=_default_client_id)
    username: str | None = setting(None, "MQTT user name")
    password_file: str | None = setting(
        None, "file holding the MQTT password; or env `SENSORGUARD_MQTT_PASSWORD` (never a flag)")
    tls_ca: str | None = setting(None, "CA bundle that signed the broker's certificate", shown="unset (system CAs)")
    tls_cert: str | None = setting(None, "client certificate (mutual TLS)")
    tls_key: str | None = setting(None, "the client certificate's private key")
    tls_insecure: bool = setting(False, "skip the broker host name check (testing only)")
    topic_prefix: str = setting("sensors", "readings are read from `<topic_prefix>/<asset>/readings`")
    output_prefix: str = setting("sensorguard", "alerts on `<output_prefix>/alerts/<asset>`, state, status")
    instance: str | None = setting(None, "this daemon's name: its status is retained on "
                                   "`<output_prefix>/status/<instance>`, its events and metrics carry it",
                                   shown="unset (the client id)")
    partition: tuple[str, ...] = setting(
        help="MQTT topic filters under `topic_prefix` this instance serves, each ending in `#` or `readings` "
        "(`site-a/#`, `+/readings`; repeat the flag; a TOML list; comma-separated in the environment); refused at "
        "start if they overlap a running instance's",
        shown="`#` (every asset)", factory=lambda: ("#",))
    cluster: tuple[str, ...] = setting(
        help="NATS servers (`nats://HOST:PORT`, repeat the flag or separate by commas): cluster mode takes "
        "readings from the JetStream partitions this worker owns (`sensorguard cluster init`) instead of an MQTT "
        "session; alerts and states still go to `broker` (the NATS MQTT listener: `mqtt_version` 3.1.1)",
        shown="unset (MQTT mode)", factory=tuple)
    workers: int | None = setting(
        None, "processes, each its own MQTT session (`<client_id>-w<k>`, instance `<instance>-w<k>`) on a share of "
        "the partitions, behind one metrics endpoint; 1 is the plain single daemon",
        shown="unset (one per core this process may use: its CPU affinity, a container's cpuset; at most the "
        "number of partitions)")
    session_expiry_s: int = setting(
        86400, "how long the broker keeps the session (and queued readings) while the daemon is away")
    keepalive_s: int = setting(30, "MQTT keep-alive, seconds", flag=False)
    metrics_host: str = setting("127.0.0.1", "address of the HTTP server (`/metrics`, `/healthz`, `/readyz`)")
    metrics_port: int = setting(10100, "its port")
    max_assets: int = setting(1000, "assets tracked at most (caps memory and per-asset metric labels; one none "
                              "of whose readings was taken yet gives its slot to a new one; an asset restored from "
                              "`state_dir` keeps its slot until it sends again or its restored state ends, a "
                              "silence of `stale_after_s`, so an alert up at a restart is judged and cleared, not "
                              "refused as `too_many_assets` behind assets that sent first)")
    max_payload_bytes: int = setting(65536, "larger messages are rejected", flag=False)
    max_samples_per_message: int = setting(1000, "larger batches are rejected", flag=False)
    max_future_s: float = setting(3600.0, "readings stamped further ahead of this machine's clock, and of their "
                                  "asset's last reading, are rejected "
                                  "(`future_ts`): one reading from a glitching clock would make every true one "
                                  "after it out of order (one nearer, over a minute ahead, is undone by the 5 true "
                                  "readings that come while it still is)",
                                  flag=False)
    fill_limit: int | None = setting(None, "missing values forward-filled at most, in samples (unset: the "
                                     "bundle's cleaning policy)", flag=False)
    max_gap_s: float | None = setting(None, "a longer silence restarts the asset's window (unset: the bundle's, "
                                      "fill_limit + 1.5 sample periods)", flag=False)
    hop: int | None = setting(None, "score every `hop` samples (another than the bundle's turns its alert hop off)",
                              shown="unset (the bundle's)")
    batch_max: int = setting(4096, "windows per scoring batch at most")
    batch_wait_ms: int = setting(20, "how long to wait to fill a batch, milliseconds")
    scoring_threads: int = setting(
        1, "torch threads for scoring; one avoids OpenMP spin-waits on cores shared with paho and the broker "
        "(12x faster under load, `docs/benchmarks.md`); raise only on a host with spare cores")
    raise_after: int = setting(3, "windows at score >= 1.0 in a row to raise an alert")
    clear_after: int = setting(5, "hops below `clear_level` in a row to clear it (twice the windows at half the hop)")
    clear_level: float = setting(1.0, "score below which a window counts towards clearing")
    clear_at: float = setting(0.5, "two windows in a row below this score (and below `clear_level`) clear an "
                                   "alert at once: the fault is over (0: never)")
    stale_after_s: float | None = setting(None, "an asset silent this long (seconds, counted while connected) is "
                                                 "reported `silent` (a sensor fault) and its alert ends",
                                          shown="unset (300 s, or the gap the bundle fills when longer)")
    record_dir: str | None = setting(None, "record readings far from alerts here, for `retrain --recorded`")
    record_guard_s: float = setting(300.0, "readings this close (reading time, seconds) to an alert are not recorded; "
                                    "at least the `window + raise_after x hop` samples an alert needs to rise")
    record_max_mb: float = setting(1024.0, "recordings kept at most, MB (oldest files deleted first)")
    record_max_age_days: float = setting(
        30.0, "recordings older than this many days are deleted (acknowledged alerts: by size only)")
    state_dir: str | None = setting(
        None, "keep each asset's alert state, drift baseline, followed level, the top channels of its last window "
        "(stated with its score until its next window), open sensor faults (its silence too), "
        "channels walked past their sensor limits and last judged window's time in `assets.json` here "
        "(saved every 30 s, before a raise goes out, within a second of each clear it announces, of the broker "
        "confirming a raise and of a sensor fault opening or closing, within 5 s of a walked channel moving by "
        "half its `jump`, and at stop; read at start) so a restart neither re-raises an alert that was up, "
        "nor resets the drift rule or the level, nor announces an open sensor fault again or forgets to end it, "
        "nor tells a walk past the limits a sensor fault, nor judges readings again that the previous run judged")
    log_json: bool = setting(False, "one JSON object per log line")
    log_level: str = setting("INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`")
    # The env password as seen at load time; private, never printed (see redacted()).
    _env_password: str | None = field(default=None, repr=False, compare=False)

    def password(self) -> str | None:
        """The MQTT password from ``password_file`` (read now, trailing newline dropped) or env."""
        if self.password_file:
            # (utf-8-sig: a BOM a Windows editor wrote was sent as part of the password, refused: a walk)
            return Path(self.password_file).read_text(encoding="utf-8-sig").rstrip("\r\n")
        return self._env_password

    def broker_parts(self) -> tuple[str, str, int, bool]:
        """``(scheme, host, port, tls)`` of the broker URL."""
        url = urlsplit(self.broker)
        scheme = url.scheme.lower()
        return scheme, url.hostname or "", url.port or DEFAULT_PORTS.get(scheme, 1883), scheme == "mqtts"

    @property
    def instance_name(self) -> str:
        """The instance's name: ``instance``, or the client id."""
        return self.instance or self.client_id

    def readings_filters(self) -> tuple[str, ...]:
        """The subscription filters for readings: each partition under the prefix (none in cluster
        mode: readings come from JetStream)."""
        return tuple(f"{self.topic_prefix}/{p}" for p in self.static_partitions())

    def static_partitions(self) -> tuple[str, ...]:
        """The partitions named by configuration (none in cluster mode, where ownership moves)."""
        return () if self.cluster else self.partition

    def cluster_servers(self) -> tuple[str, ...]:
        """``cluster`` with comma-separated entries split (``--cluster nats://a:4222,nats://b:4222``)."""
        return tuple(part.strip() for entry in self.cluster for part in entry.split(",") if part.strip())

    def alert_topic(self, asset: str) -> str:
        return f"{self.output_prefix}/alerts/{asset}"

    def state_topic(self, asset: str) -> str:
        return f"{self.output_prefix}/state/{asset}"

    def status_topic(self) -> str:
        return f"{self.output_prefix}/status/{self.instance_name}"

    def events_topic(self) -> str:
        return f"{self.output_prefix}/events"

    def redacted(self) -> dict[str, Any]:
        """All settings for ``--print-config``; the password only as ``"<set>"`` or None."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["broker"] = hide_credentials(self.broker)
        out["cluster"] = [hide_credentials(c) for c in self.cluster_servers()] or None
        out["password"] = "<set>" if (self.password_file or self._env_password) else None
        return out


_FIELDS = {f.name: f for f in fields(Settings) if not f.name.startswith("_")}
SETTING_NAMES: tuple[str, ...] = tuple(_FIELDS)  # the keys load_settings takes (flags, TOML, env)


def _field_types() -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, optional), from the annotations."""
    hints = typing.get_type_hints(Settings)
    out = {}
    for name in _FIELDS:
        hint = hints[name]
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            out[name] = (next(a for a in args if a is not type(None)), True)
        else:
            out[name] = (typing.get_origin(hint) or hint, False)
    return out


def load_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: str | Path | None = None,
    *,
    require_model: bool = True,
) -> Settings:
    """Merge defaults < ``config_file`` < ``env`` < ``flags`` and validate; raise :class:`ConfigError`.

    ``flags`` maps setting names (:data:`SETTING_NAMES`; others are reported as problems) to
    values, typed or text; None counts as not given. ``require_model=False`` lets ``demo`` build
    settings before it has trained its own model.
    """
    settings, problems = merge_settings(flags, env, config_file, require_model=require_model)
    if problems:
        raise ConfigError(problems)
    return settings


def merge_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: str | Path | None = None,
    *,
    require_model: bool = True,
) -> tuple[Settings, list[str]]:
    """:func:`load_settings` without raising: the merged settings (a value that did not convert
    keeps its default) and every problem found. ``serve --print-config`` shows both, so the
    settings can be read before the directories they name exist."""
    kinds = _field_types()
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, raw in (
        *_file_layer(config_file, problems),
        ("env", {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}),
        ("flag", {k: v for k, v in flags.items() if v is not None}),
    ):
        for key, value in raw.items():
            where = (f"{ENV_PREFIX}{key.upper()}" if source == "env" else f"flag {key}" if source == "flag"
                     else f"{source}: {key}")
            if key not in kinds:
                close = difflib.get_close_matches(key, kinds, n=1, cutoff=0.8) or _likely(key, kinds, source)
                if source == "env" and (key in ("password", "mqtt_password") or not close):
                    continue  # other SENSORGUARD_* variables (a wrapper's) are not ours; the password: below
                hint = ("; use password_file or " + PASSWORD_ENV if key == "password" else
                        f"; did you mean {ENV_PREFIX + close[0].upper() if source == 'env' else close[0]}?"
                        if close else "")  # (a mistyped variable was ignored in silence; a README walk)
                problems.append(f"{where}: unknown setting{hint}")
                continue
            converted = convert(key, value, kinds[key], where, problems, from_text=source == "env")
            if converted is not BAD:
                values[key], sources[key] = converted, where
    _one_model(values, sources)
    _normalise(values)
    env_password = env.get(PASSWORD_ENV) or None
    # an env file's empty line with a user name and no password file: no password was sent, unsaid (a walk);
    # beside a password file, or with no user (a template's `${PW:-}`), it changes nothing (a review)
    if PASSWORD_ENV in env and not env_password and values.get("username") and not values.get("password_file"):
        problems.append(f"{PASSWORD_ENV} is set but empty: the broker would get no password; unset it or fill it")
    # SENSORGUARD_PASSWORD alone would send no password at all; a leftover beside one that works is
    # no reason to refuse a start
    if f"{ENV_PREFIX}PASSWORD" in env and not (env_password or values.get("password_file")):
        problems.append(f"{ENV_PREFIX}PASSWORD: unknown setting; use password_file or {PASSWORD_ENV}")
    settings = Settings(**values, _env_password=env_password)
    problems += validate(settings, sources, require_model)
    if settings.password_file and env_password:
        problems.append(f"password: both password_file and {PASSWORD_ENV} are set; use one")
    return settings, problems


# (not USER, HOST or PORT alone: a wrapper's own variables may be called so, and they are left alone)
ENV_SLIPS = {"mqtt_user": "username", "log_format": "log_json", "tls_ca_file": "tls_ca", "tls_cert_file": "tls_cert",
             "tls_key_file": "tls_key"}


def _likely(key: str, kinds: dict, source: str) -> list[str]:
    """The setting a variable was likely meant for: ``SENSORGUARD_MQTT_BROKER`` (the one secret
    variable is ``SENSORGUARD_MQTT_PASSWORD``, so an ``MQTT_`` prefix is the likeliest slip) or a
    common other name. Ignored in silence, the daemon went to the default broker (a walk)."""
    if source != "env":
        return []
    bare = key.removeprefix("mqtt_")
    return [name for name in (bare if bare != key else None, ENV_SLIPS.get(key)) if name in kinds][:1]


def _one_model(values: dict[str, Any], sources: dict[str, str]) -> None:
    """``model`` and ``registry``+``name`` are alternatives: the one set at the higher layer wins
    (flags > environment > file), as for any setting. ``serve --config plant.toml --model m`` with a
    registry in the file was refused, and only ``--registry '' --name ''`` got past it (found in a
    README walk); both at one layer stay a conflict, which :func:`validate` names."""
    def layer(key: str) -> int:
        where = sources.get(key, "")
        return 2 if where.startswith("flag ") else 1 if where.startswith(ENV_PREFIX) else 0

    if not values.get("model") or not (values.get("registry") or values.get("name")):
        return
    pair = max(layer(k) for k in ("registry", "name") if values.get(k))
    if layer("model") > pair:
        drop = ("registry", "name")
    elif pair > layer("model"):
        drop = ("model",)
    else:
        return
    for key in drop:
        values.pop(key, None)
        sources.pop(key, None)


def _normalise(values: dict[str, Any]) -> None:
    """Accepted spellings to their one form, before validation."""
    version = values.get("mqtt_version")
    if version is not None:
        values["mqtt_version"] = _MQTT_VERSIONS.get(version, version)
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()


_MQTT_VERSIONS = {"5.0": "5", "311": "3.1.1"}


def _file_layer(config_file: str | Path | None, problems: list[str]) -> list[tuple[str, dict]]:
    if config_file is None:
        return []
    where = f"config file {config_file}"
    try:
        doc = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        problems.append(f"{where}: cannot read: {err}")
        return []
    table = doc.get("sensorguard")
    if isinstance(table, dict):  # a shared file: only our table counts; stray top-level keys are typos
        problems += [
            f"{where}: unknown top-level key {k!r}" for k, v in doc.items() if not isinstance(v, dict)
        ]
        doc = table
    return [(f"config file {config_file}", doc)]
