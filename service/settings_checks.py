"""Every check on merged settings, each problem naming where its value came from.

:func:`validate` is what :func:`~sensorguard.service.config.load_settings` runs once, whatever
layer (TOML file, environment, flag) a value came from, so a bad value gets the same message
everywhere and every problem is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sensorguard.service.instances import filter_problems

if TYPE_CHECKING:
    from sensorguard.service.config import Settings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def validate(s: Settings, sources: Mapping[str, str], require_model: bool) -> list[str]:
    """Every problem with a merged Settings, each naming where the bad value came from."""
    problems: list[str] = []

    def bad(name: str, message: str) -> None:
        origin = sources.get(name)
        problems.append(f"{name}: {message}" + (f" (from {origin})" if origin else ""))

    if s.model and (s.registry or s.name):  # each value's origin named: one set in a file, one by a flag
        others = [sources[k] for k in ("registry", "name") if getattr(s, k) and sources.get(k)]
        bad("model", "give either model or registry+name, not both" + (f" ({', '.join(others)})" if others else ""))
    elif s.model:
        if Path(s.model).is_file():  # (said "does not exist" of a data file given as the model: a walk)
            bad("model", f"{s.model!r} is a file, not a bundle directory (the directory train wrote)")
        elif not Path(s.model).is_dir():
            bad("model", f"bundle directory {s.model!r} does not exist")
    elif s.registry or s.name:
        if not (s.registry and s.name):
            bad("registry" if not s.registry else "name", "registry and name go together")
        elif not Path(s.registry).is_dir():
            bad("registry", f"registry directory {s.registry!r} does not exist")
    elif require_model:
        bad("model", "no model: give model (a bundle directory) or registry and name")

    problems += broker_problems(s, sources)
    if s.mqtt_version not in ("5", "3.1.1"):
        bad("mqtt_version", f"must be '5' or '3.1.1', got {s.mqtt_version!r}")
    if not s.client_id or len(s.client_id) > 256 or any(c.isspace() for c in s.client_id):
        bad("client_id", f"must be 1..256 characters without spaces, got {s.client_id!r}")
    if s.password_file:
        try:
            if not Path(s.password_file).read_bytes().decode("utf-8-sig").rstrip("\r\n"):
                bad("password_file", f"{s.password_file!r} is empty: the broker would get an empty password")
        except OSError as err:
            bad("password_file", f"cannot read {s.password_file!r}: {err.strerror or err}")
        except UnicodeDecodeError:  # (the error's text would quote a byte of the password)
            bad("password_file", f"{s.password_file!r} is not UTF-8 text")
    if (s.password_file or s._env_password) and not s.username:  # paho sends a password only with a username
        bad("username", "a password is sent only with a username: set username too")
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            bad(name, f"file {path!r} does not exist")
    if bool(s.tls_cert) != bool(s.tls_key):
        bad("tls_cert", "tls_cert and tls_key go together")
    for problem in _tls_problems(s):  # (content that is no certificate failed at start, naming no setting: a walk)
        bad(*problem)

    for name in ("topic_prefix", "output_prefix"):
        value = getattr(s, name)
        levels = value.split("/")
        if not value or any(not lvl or "+" in lvl or "#" in lvl for lvl in levels):
            bad(name, f"must be non-empty topic levels without '+', '#' or empty levels, got {value!r}")
    if f"{s.output_prefix}/".startswith(f"{s.topic_prefix}/"):  # (its own statuses read back as bad_asset: a walk)
        bad("output_prefix", f"{s.output_prefix!r} is under topic_prefix {s.topic_prefix!r}: the daemon would read "
            "its own alerts, states and statuses as readings; give another (default sensorguard)")
    if s.instance is not None and (not s.instance or any(c in s.instance for c in "/+#") or
                                   any(c.isspace() for c in s.instance)):
        bad("instance", f"must be one topic level without '/', '+', '#' or spaces, got {s.instance!r}")
    elif s.instance is None and any(c in s.client_id for c in "/+#"):
        bad("client_id", f"{s.client_id!r} cannot name the instance (one status topic level, no '/', '+', '#'): "
            "set instance")
    if not s.partition:
        bad("partition", "give at least one topic filter (`#`: every asset)")
    elif not s.cluster and isinstance(s.workers, int) and s.workers > len(s.partition):  # (--print-config passed it,
        bad("workers", f"{s.workers} workers need at least as many partitions, got {len(s.partition)} "  # serve not)
            f"({', '.join(s.partition)}); add --partition filters")
    for problem in filter_problems(s.partition):
        bad("partition", problem)
    if s.cluster and not s.cluster_servers():  # (`--cluster ,`: cluster mode with no server, silent forever)
        bad("cluster", "names no NATS server: expected nats://HOST:PORT[,nats://HOST:PORT...], "
            f"got {','.join(s.cluster)!r}")
    for server in s.cluster_servers():
        if not nats_url(server):  # a bad port was retried every 5 s as if the server were down (a walk)
            bad("cluster", f"expected nats://HOST:PORT (PORT 1-65535), got {hide_credentials(server)!r}")
    if s.cluster and not re.fullmatch(r"[-_=.A-Za-z0-9]+", s.instance_name):
        bad("instance", f"cluster mode names workers by their instance: {s.instance_name!r} must be letters, digits, "
            "'-', '_', '=' or '.' (a key of the ownership bucket)")
    if s.cluster and s.partition != ("#",):
        bad("partition", "cluster mode assigns the partitions itself (sensorguard cluster init --partitions): "
            "drop partition")
    if not s.metrics_host:
        bad("metrics_host", "must not be empty")
    if not 0 <= s.metrics_port <= 65535:
        bad("metrics_port", f"must be in 0..65535, got {s.metrics_port}")

    minimums = {
        "session_expiry_s": 1,  # 0 ends the session, and the readings queued in it, at every disconnect
        "keepalive_s": 0,
        "max_assets": 1,
        "max_payload_bytes": 2,
        "max_samples_per_message": 1,
        "fill_limit": 0,
        "batch_max": 1,
        "batch_wait_ms": 0,
        "scoring_threads": 1,
        "workers": 1,
        "raise_after": 1,
        "clear_after": 1,
    }
    for name, low in minimums.items():
        if getattr(s, name) is not None and getattr(s, name) < low:
            bad(name, f"must be >= {low}, got {getattr(s, name)}")
    if s.session_expiry_s > 0xFFFFFFFF:
        bad("session_expiry_s", f"must be <= {0xFFFFFFFF} (MQTT's limit), got {s.session_expiry_s}")
    if s.keepalive_s > 65535:
        bad("keepalive_s", f"must be <= 65535, got {s.keepalive_s}")
    if s.hop is not None and s.hop < 1:
        bad("hop", f"must be >= 1 or unset, got {s.hop}")
    for name, unit in (("max_gap_s", " seconds"), ("stale_after_s", " seconds"), ("reload_poll_s", " seconds"),
                       ("shadow_report_s", " seconds"), ("record_max_mb", " MB"), ("record_max_age_days", " days"),
                       ("max_future_s", " seconds")):
        value = getattr(s, name)
        if value is not None and not value > 0:
            bad(name, f"must be > 0{unit}, got {value}")
    if not 0 < s.clear_level <= 1:
        bad("clear_level", f"must be in (0, 1], got {s.clear_level}")
    if not 0 <= s.clear_at <= 1:
        bad("clear_at", f"must be in [0, 1] (0: never), got {s.clear_at}")
    if s.record_guard_s < 0:
        bad("record_guard_s", f"must be >= 0 seconds, got {s.record_guard_s}")
    if s.record_dir and Path(s.record_dir).exists() and not Path(s.record_dir).is_dir():
        bad("record_dir", f"{s.record_dir!r} exists and is not a directory")
    if s.state_dir and Path(s.state_dir).exists() and not Path(s.state_dir).is_dir():
        bad("state_dir", f"{s.state_dir!r} exists and is not a directory")
    if s.log_level not in LOG_LEVELS:
        bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    return problems


def hide_credentials(url: str) -> str:
    """``mqtt://user:secret@host`` -> ``mqtt://***@host``: error messages and logs never hold a secret."""
    scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def broker_problems(s: Settings, sources: Mapping[str, str]) -> list[str]:
    origin = f" (from {sources['broker']})" if "broker" in sources else ""
    shown = hide_credentials(s.broker)
    if "://" not in s.broker:  # host:port alone was parsed as a scheme: three errors, one wrong (a README walk)
        return [f"broker: give a URL such as mqtt://{shown} (mqtts:// for TLS), got {shown!r}{origin}"]
    try:
        url = urlsplit(s.broker)
        port = url.port
    except ValueError as err:
        return [f"broker: cannot parse {shown!r}: {err}{origin}"]
    problems = []
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        problems.append(f"broker: scheme must be mqtt:// or mqtts://, got {shown!r}{origin}")
    if not url.hostname:
        problems.append(f"broker: no host in {shown!r}{origin}")
    if port == 0:
        problems.append(f"broker: port must be in 1..65535, got {shown!r}{origin}")
    if url.username is not None or url.password is not None:
        problems.append(f"broker: put no credentials in the URL (use username and password_file){origin}")
    if url.path not in ("", "/") or url.query or url.fragment:
        problems.append(f"broker: unexpected path or query in {shown!r}{origin}")
    if scheme == "mqtt":
        tls_set = [n for n in ("tls_ca", "tls_cert", "tls_key", "tls_insecure") if getattr(s, n)]
        if tls_set:
            problems.append(f"broker: {', '.join(tls_set)} set but the broker URL is mqtt:// (use mqtts://)")
    return problems


def nats_url(server: str) -> bool:
    """Whether ``server`` is ``nats://`` or ``tls://`` ``[user:pass@]HOST:PORT`` with a port in range.

    >>> nats_url("nats://127.0.0.1:4222"), nats_url("nats://127.0.0.1:abc"), nats_url("nats://h:99999")
    (True, False, False)
    """
    scheme, _, rest = server.partition("://")
    host, _, port = rest.rpartition("@")[2].rpartition(":")
    return scheme in ("nats", "tls") and bool(host) and port.isdigit() and 0 < int(port) < 65536


def _tls_problems(s: Settings) -> list[tuple[str, str]]:
    """What OpenSSL would refuse in the TLS files, read now so ``--print-config`` and the start say
    it with the setting's name (the start said "[X509: NO_CERTIFICATE_OR_CRL_FOUND]" alone)."""
    import ssl

    out = []
    if s.tls_ca and Path(s.tls_ca).is_file():
        try:
            ssl.create_default_context().load_verify_locations(s.tls_ca)
        except (ssl.SSLError, OSError, ValueError) as err:
            out.append(("tls_ca", f"{s.tls_ca!r} holds no CA certificate OpenSSL can read (PEM): {err}"))
    if s.tls_cert and s.tls_key and Path(s.tls_cert).is_file() and Path(s.tls_key).is_file():
        try:  # (an encrypted key: paho is given no passphrase either)
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(s.tls_cert, s.tls_key, password=lambda: "")
        except (ssl.SSLError, OSError, ValueError) as err:
            try:  # (said "[SSL] PEM lib" alone: a walk)
                locked = b"ENCRYPTED" in Path(s.tls_key).read_bytes()[:4096]
            except OSError:  # (unreadable: the error below says so; raised here, it was a traceback)
                locked = False
            out.append(("tls_cert", f"{s.tls_key!r} is a passphrase-protected key: give the key without its "
                        f"passphrase (openssl pkey -in {s.tls_key} -out plain.key), readable by the daemon only"
                        if locked else f"{s.tls_cert!r} and {s.tls_key!r} are no certificate and unencrypted key "
                        f"OpenSSL can read (PEM, the key matching): {err}"))
    return out
