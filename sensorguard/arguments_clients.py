"""The arguments of the verbs that are MQTT clients of a running daemon: the operator commands
(``maintenance``, ``ack``, ``shelve``) and ``alerts``, and the broker settings they and ``replay``
take (:mod:`sensorguard.arguments` declares the rest).
"""

from __future__ import annotations

import argparse

from sensorguard.argtypes import maintenance_span, positive_float, shelving

# The broker settings `replay` shares with `serve` (it publishes where serve reads).
REPLAY_SETTINGS = ("broker", "mqtt_version", "client_id", "username", "password_file", "tls_ca", "tls_cert",
                   "tls_key", "tls_insecure", "topic_prefix")


# Commands reach the daemon's command topic: the broker settings plus where it publishes.
COMMAND_SETTINGS = (*REPLAY_SETTINGS, "output_prefix")


def add_client_verbs(verbs) -> None:
    """``maintenance``, ``ack`` and ``shelve``: MQTT clients that publish one command and print
    the daemon's answer (``service/commands.py``); ``alerts``, which reads the retained states."""
    from sensorguard.service.flags import add_setting_flags

    # (--broker was required: the docs' `sensorguard shelve ASSET --for 2h` failed on usage, and a
    # SENSORGUARD_BROKER set for serve was not taken; now as serve: flag, variable, default; a walk)
    # (a daemon's own id, from serve's flags, took over its session: the daemon was thrown off the
    # broker twice, its queued readings lost, and the command went unanswered; a walk)
    said = {"client_id": "MQTT client id of this command alone, never a daemon's (the broker drops the older "
            "connection of an id) (default sensorguard-command-<pid>-<random>)",
            "broker": "mqtt://HOST:PORT or mqtts://HOST:PORT (default as serve: SENSORGUARD_BROKER, else "
            "mqtt://127.0.0.1:1883)",
            # (it said readings are read there: a walk)
            "topic_prefix": "not used by commands, which go under --output-prefix (taken so one set of flags fits "
            "serve too)"}

    def broker_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", help="who gives the command (kept in the audit log)")
        p.add_argument("--timeout", type=positive_float, default=10.0,
                       help="seconds to wait for the daemon's answer (default 10)")
        add_setting_flags(p, COMMAND_SETTINGS, said)

    p = verbs.add_parser("maintenance", help="start or end an asset's maintenance: its alerts suppressed, its "
                         "readings not recorded as normal", description="Publish a maintenance command to the "
                         "daemon serving the asset and print its answer.")
    p.add_argument("action", choices=("start", "end"))
    p.add_argument("asset", help="asset id (site-a/pump-7)")
    p.add_argument("--until", type=maintenance_span,
                   help="end it by itself after this long (90m, 8h; default: when ended)")
    p.add_argument("--reason", help="why (kept in the audit log)")
    broker_flags(p)
    p = verbs.add_parser("ack", help="acknowledge an alert, optionally as a false alarm",
                         description="Publish an acknowledgement of ALERT_ID (<asset>@<ms>, as in the alert "
                                     "event) and print the daemon's answer.")
    p.add_argument("alert_id")
    p.add_argument("--false-alarm", action="store_true", help="the alert was not a real problem")
    p.add_argument("--note", help="a note (kept in the audit log)")
    broker_flags(p)
    p = verbs.add_parser("shelve", help="shelve an asset's alerts for a while (0 unshelves)",
                         description="Publish a shelve command (at most 7 days) and print the daemon's answer.")
    p.add_argument("asset", help="asset id (site-a/pump-7)")
    p.add_argument("--for", dest="for_s", type=shelving, required=True, help="how long (30m, 8h, 1d; 0 unshelves)")
    p.add_argument("--reason", help="why (kept in the audit log)")
    broker_flags(p)
    p = verbs.add_parser("alerts", help="list the alerts up (their alert_id), held assets and sensor faults",
                         description="Read every asset's state the daemons keep retained on the broker and list "
                                     "those that need an operator: an alert up, held by maintenance or shelving, "
                                     "or a sensor fault open.")
    p.add_argument("--all", dest="everything", action="store_true", help="every asset, normal and silent too")
    p.add_argument("--asset", help="only assets matching this pattern (line-1/*)")
    p.add_argument("--json", action="store_true", help="the states as retained, one JSON object a line")
    p.add_argument("--timeout", type=positive_float, default=5.0,
                   help="seconds to wait for the states (default 5; the read ends sooner once they stop coming)")
    add_setting_flags(p, COMMAND_SETTINGS, said)
