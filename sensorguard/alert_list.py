"""``sensorguard alerts``: what needs an operator now, read from the daemons' retained states.

Every daemon keeps each asset's current state retained on ``<output_prefix>/state/<asset>``: the
alert up and its ``alert_id``, whether it is acknowledged, a maintenance or shelving holding the
asset, its open sensor faults. A new subscriber gets them all at once, so one read lists what is
open; before, the ``alert_id`` an ``ack`` needs came from a raw ``mosquitto_sub`` of those topics.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import threading
import time

import orjson

QUIET_S = 0.5  # retained states come at once after the subscription: this long without one ends the read
OPEN = ("alerting", "pending")  # (pending: over the line, not yet raised)


def read_states(settings, timeout_s: float) -> dict[str, dict]:
    """Every asset's retained state under ``<output_prefix>/state/`` (an asset -> its document), read
    until none came for ``QUIET_S`` or ``timeout_s`` passed; a cleared (empty) one is left out."""
    from sensorguard.service import mqtt

    prefix = f"{settings.output_prefix}/state/"
    states: dict[str, dict] = {}
    last = [time.monotonic()]
    lock = threading.Lock()

    def on_message(client, userdata, message) -> None:
        try:
            doc = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict) and message.topic.startswith(prefix):
            asset = message.topic[len(prefix):]  # the topic names the asset (a document's own field may not)
            with lock:
                states[asset] = {**doc, "asset": asset}
                last[0] = time.monotonic()

    deadline = time.monotonic() + timeout_s
    # QoS 0: at QoS 1 Mosquitto sends its in-flight window and queue of retained states (about
    # 1,020) and drops the rest, and alerts up went unlisted (a review)
    with mqtt.listening(settings, prefix + "#", on_message, timeout_s, qos=0) as client:
        if client is None:
            raise ConnectionError(f"could not connect to {settings.redacted()['broker']}")
        last[0] = time.monotonic()  # (from the subscription's grant)
        while (now := time.monotonic()) < deadline and now - last[0] < QUIET_S:
            time.sleep(0.05)
    with lock:
        return dict(states)


def needs_operator(doc: dict) -> bool:
    """An alert up, the asset held (its alerts not announced), or a sensor fault open."""
    return doc.get("state") in OPEN or bool(doc.get("suppressed")) or bool(doc.get("sensor_faults"))


def _order(doc: dict) -> tuple:
    """Alerts not acknowledged first, then acknowledged ones, pending, held, sensor faults, the rest."""
    state = doc.get("state")
    rank = (0 if state == "alerting" and not doc.get("acked") and not doc.get("suppressed") else
            1 if state == "alerting" else 2 if state == "pending" else 3 if doc.get("suppressed") else
            4 if doc.get("sensor_faults") else 5)
    return rank, str(doc.get("asset"))


def table(docs: list[dict]) -> list[list[str]]:
    """The rows printed: asset, state, alert id, score at AT (1 is the line), the alert's peak so far,
    acknowledged, held, faults, AT (the reading time the state was published at: at a change of
    status or hold, so its score is that moment's). The peak is what an alert up is judged by: the
    score alone read 4.00 at the raise and 49.56 after an ack, with nothing saying why (a walk)."""
    rows = [["ASSET", "STATE", "ALERT_ID", "SCORE", "PEAK", "ACKED", "HELD", "SENSOR_FAULTS", "AT"]]
    for doc in docs:
        score, peak = doc.get("score"), doc.get("peak_score") if doc.get("state") == "alerting" else None
        acked = doc.get("acked")
        listed = doc.get("sensor_faults")
        faults = ([f"{f.get('kind')} {f.get('channel') or ''}".strip() for f in listed if isinstance(f, dict)]
                  if isinstance(listed, list) else [str(listed)] if listed else [])
        rows.append([str(doc.get("asset")), str(doc.get("state")), str(doc.get("alert_id") or "-"),  # (a foreign
                     f"{score:.2f}" if isinstance(score, int | float) else "-",  # document's odd types: a review)
                     f"{peak:.2f}" if isinstance(peak, int | float) else "-",
                     "-" if acked is None else "yes" if acked else "no", str(doc.get("suppressed") or "-"),
                     ", ".join(faults) or "-", str(doc.get("ts") or "-")])
    return rows


def summary(states: dict[str, dict], shown: int) -> str:
    """One line: how many assets, alerts (unacknowledged), held, with faults, silent; what --all adds."""
    docs = list(states.values())
    up = [d for d in docs if d.get("state") == "alerting"]
    unacked = sum(not d.get("acked") for d in up)
    held = sum(bool(d.get("suppressed")) for d in docs)
    faults = sum(bool(d.get("sensor_faults")) for d in docs)
    silent = sum(d.get("state") == "stale" for d in docs)
    return (f"{len(docs)} assets: {len(up)} alerting ({unacked} not acknowledged), {held} held, {faults} with sensor "
            f"faults, {silent} silent; {shown} shown")


def list_alerts(args: argparse.Namespace) -> int:
    """``sensorguard alerts``: print the assets that need an operator (``--all``: every asset)."""
    from sensorguard.clients import client_settings

    settings = client_settings(args, "alerts")
    states = read_states(settings, args.timeout)
    docs = sorted((d for asset, d in states.items() if (args.everything or needs_operator(d))
                   and (args.asset is None or fnmatch.fnmatchcase(asset, args.asset))), key=_order)
    if args.json:
        for doc in docs:
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    if not states:
        print(f"no asset states under {settings.output_prefix}/state/ on {settings.redacted()['broker']}: no daemon "
              "has scored a window there yet, it publishes under another --output-prefix, or this user may not read "
              "there (Mosquitto grants such a subscription and delivers nothing)", file=sys.stderr)
        return 0
    if docs:
        rows = table(docs)
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(summary(states, len(docs)) + ("" if args.everything else " (--all: every asset)"))
    return 0
