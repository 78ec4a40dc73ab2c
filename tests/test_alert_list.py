"""``sensorguard alerts``: which retained states need an operator, and in what order they are listed."""

from __future__ import annotations

from sensorguard.alert_list import _order, needs_operator, summary, table


def state(asset: str, status: str = "normal", **extra) -> dict:
    return {"asset": asset, "state": status, "ts": "2026-01-01T00:00:00.000Z", "score": 0.5, "alert_id": None,
            "sensor_faults": [], "suppressed": None, "acked": None, **extra}


STATES = {
    "p-normal": state("p-normal"),
    "p-acked": state("p-acked", "alerting", alert_id="p-acked@1", acked=True, score=1.8),
    "p-up": state("p-up", "alerting", alert_id="p-up@2", acked=False, score=2.5),
    "p-held": state("p-held", suppressed="maintenance"),
    "p-held-up": state("p-held-up", "alerting", alert_id="p-held-up@3", acked=False, suppressed="shelved"),
    "p-dead": state("p-dead", sensor_faults=[{"kind": "missing", "channel": "temp", "since": "..."}]),
    "p-silent": state("p-silent", "stale"),
    "p-pending": state("p-pending", "pending", score=1.2),
}


def test_the_assets_that_need_an_operator_and_their_order():
    shown = sorted((d for d in STATES.values() if needs_operator(d)), key=_order)
    # an alert nobody answered first; a held asset's alert is not paged (it waits for the hold's end)
    assert [d["asset"] for d in shown] == ["p-up", "p-acked", "p-held-up", "p-pending", "p-held", "p-dead"]
    rows = table(shown)
    assert rows[0][:5] == ["ASSET", "STATE", "ALERT_ID", "SCORE", "ACKED"]
    assert rows[1] == ["p-up", "alerting", "p-up@2", "2.50", "no", "-", "-", "2026-01-01T00:00:00.000Z"]
    assert rows[3][5] == "shelved" and rows[5][5] == "maintenance" and rows[6][6] == "missing temp"
    assert summary(STATES, len(shown)) == ("8 assets: 3 alerting (2 not acknowledged), 2 held, 1 with sensor faults, "
                                           "1 silent; 6 shown")


def test_a_state_from_an_older_daemon_without_the_newer_fields_is_listed():
    old = {"asset": "p", "state": "alerting", "ts": "2026-01-01T00:00:00Z", "score": 1.5, "alert_id": "p@1"}
    assert needs_operator(old) and table([old])[1] == ["p", "alerting", "p@1", "1.50", "-", "-", "-",
                                                       "2026-01-01T00:00:00Z"]
