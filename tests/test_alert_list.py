"""``sensorguard alerts``: which retained states need an operator, and in what order they are listed."""

from __future__ import annotations

from sensorguard.alert_list import _order, needs_operator, summary, table


def state(asset: str, status: str = "normal", **extra) -> dict:
    return {"asset": asset, "state": status, "ts": "2026-01-01T00:00:00.000Z", "score": 0.5, "alert_id": None,
            "sensor_faults": [], "suppressed": None, "acked": None, **extra}


STATES = {
    "p-normal": state("p-normal"),
    "p-acked": state("p-acked", "alerting", alert_id="p-acked@1", acked=True, score=1.8),
    "p-up": state("p-up", "alerting", alert_id="p-up@2", acked=False, score=2.5, peak_score=49.56),
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
    assert rows[0][:6] == ["ASSET", "STATE", "ALERT_ID", "SCORE", "PEAK", "ACKED"]
    assert rows[1] == ["p-up", "alerting", "p-up@2", "2.50", "49.56", "no", "-", "-", "2026-01-01T00:00:00.000Z"]
    assert rows[4][4] == "-"  # pending: no alert, so no peak to judge it by
    assert rows[3][6] == "shelved" and rows[5][6] == "maintenance" and rows[6][7] == "missing temp"
    assert summary(STATES, len(shown)) == ("8 assets: 3 alerting (2 not acknowledged), 2 held, 1 with sensor faults, "
                                           "1 silent; 6 shown")


def test_a_state_from_an_older_daemon_without_the_newer_fields_is_listed():
    odd = {"asset": "q", "state": "normal", "sensor_faults": True}  # a foreign document's odd type: listed, no crash
    assert needs_operator(odd) and table([odd])[1][7] == "True"
    old = {"asset": "p", "state": "alerting", "ts": "2026-01-01T00:00:00Z", "score": 1.5, "alert_id": "p@1"}
    assert needs_operator(old) and table([old])[1] == ["p", "alerting", "p@1", "1.50", "-", "-", "-", "-",
                                                       "2026-01-01T00:00:00Z"]


def test_thousands_of_retained_states_are_all_read_from_a_mosquitto_with_its_default_queue(tmp_path, capsys):
    """At QoS 1 a default Mosquitto sends a subscriber its in-flight window and queue of retained
    messages, about 1,020, and drops the rest: 3,000 states listed as 1,020 and alerts up went
    unlisted (a review). The states are read at QoS 0; a foreign document on a state topic is listed
    by its topic, not a crash."""
    import json

    import paho.mqtt.client as paho

    from sensorguard.cli import main
    from tests.mosquitto import client_id
    from tests.test_security import broker_with

    broker = broker_with(tmp_path / "default", ["allow_anonymous true"])  # its default queue limits
    try:
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id("states"))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        infos = [pub.publish(f"sensorguard/state/p{k}", json.dumps(
            state(f"p{k}", "alerting" if k % 10 == 0 else "normal", alert_id=f"p{k}@1", acked=False)), qos=1,
            retain=True) for k in range(3000)]
        infos.append(pub.publish("sensorguard/state/odd", json.dumps({"alert_id": 5, "suppressed": True,
                                                                       "state": "alerting"}), qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        assert main(["alerts", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--timeout", "20"]) == 0
        out = capsys.readouterr().out
        assert "3001 assets: 301 alerting" in out.splitlines()[-1], out[-300:]
        assert any(line.split()[:3] == ["odd", "alerting", "5"] for line in out.splitlines()), out[:500]
    finally:
        broker.stop()
