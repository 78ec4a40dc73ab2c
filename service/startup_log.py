"""What the daemon logs at start: the model it serves, where, and each setting that breaks a promise.

One place for the lines an operator reads first (:meth:`Daemon.announce
<sensorguard.service.daemon.Daemon.announce>`). The settings are valid on their own, but the bundle
was calibrated, and is scored offline, under its own ones, so the warnings of
:mod:`~sensorguard.service.bundle_checks` that apply are logged here, where they are seen.
"""

from __future__ import annotations

import logging
import os

from sensorguard.service.alerts import AlertRules
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import hop_warning, rules_warning, stale_warning
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.config import Settings

# The daemon's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.daemon")


def announce(settings: Settings, bundle: Bundle, hop: int, address: tuple[str, int], policy: CleaningPolicy,
             rules: AlertRules, guard_s: float | None) -> None:
    """Log what is served, and every setting that breaks the bundle's promise or live == offline.

    address: where ``/metrics`` listens; policy and rules: the cleaning and alert rules served;
    guard_s: the recorder's guard band in force (``recorder.guard_seconds``: ``record_guard_s``, or
    longer at a slow sample period; the setting alone was logged, 300 s where 440 s applied, a walk);
    None when normal readings are not recorded (no ``record_dir``).
    """
    s = settings
    b = bundle
    host, port = address
    log.info(
        "serving model %s %s (%d channels, window %d, hop %d, threshold %.4g); broker %s (MQTT %s, "
        "client id %s); metrics on http://%s:%d/metrics",
        b.name, b.version, len(b.channels), b.window, hop, b.threshold_,
        s.redacted()["broker"], s.mqtt_version, s.client_id, host, port,
    )
    for note in (hop_warning(hop, b), stale_warning(policy, rules.stale_after), rules_warning(rules, b.calibration),
                 password_file_warning(s.password_file)):
        if note is not None:
            log.warning(note)
    if guard_s is not None:
        longer = f", longer than record_guard_s {s.record_guard_s:g} s: an alert of this model at its sample " \
                 "period takes that long to rise" if guard_s > s.record_guard_s else ""
        log.info("recording readings far from alerts to %s (guard %.0f s%s; at most %g MB, %g days)",
                 s.record_dir, guard_s, longer, s.record_max_mb, s.record_max_age_days)


def password_file_warning(path: str | None) -> str | None:
    """A password file others on the host may read (or change): said at start, as ssh says of a
    key file; not refused, since a group the daemon shares with an admin may be meant
    (found in a README walk: mode 0666 went unsaid)."""
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)  # a mounted secret (Kubernetes: 0644):
    except OSError:  # (validate said why it cannot be read)                # not ours to chmod
        return None
    if mode & 0o007 and not read_only:
        can = " or ".join(w for bit, w in ((0o004, "read"), (0o002, "changed")) if mode & bit) or "used"
        return (f"password_file {path} can be {can} by every user of this host (mode {mode & 0o777:o}): "
                f"chmod 600 {path}")
    return None
