"""People answering alerts (ISA-18.2): maintenance, shelving and acknowledgement, over MQTT.

The commands (``maintenance``, ``shelve``, ``ack``) arrive as messages
(:mod:`~sensorguard.service.command_messages`: their format and checks) and are carried out by
:class:`AlarmControls`, which the daemon shares between its command thread and its scoring worker.

While an asset is in **maintenance** or **shelved**, its windows are still scored (metrics,
retained state with ``"suppressed"``) but no alert event is published; maintenance also keeps its
readings out of the recorded normal data. Shelving is time-limited (at most ``MAX_SHELVE_S``), as
ISA-18.2 asks; maintenance may be open-ended. Controls are wall-clock times (operators' time) and
persist in ``<state_dir>/controls.json`` across restarts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import Counter

from sensorguard.service.command_messages import Command
from sensorguard.service.controls_file import SEND_KEPT_S, SENDS_KEPT, audit_files, newest, read_sends, usable_alerts
from sensorguard.service.durable import write_durably
from sensorguard.service.logs import RateLimiter, first_line
from sensorguard.service.set_aside import move_aside
from sensorguard.service.state_writes import CONTROLS, REPEAT_S, StateWrites

log = logging.getLogger(__name__)

MAX_CONTROLS = 10_000  # assets under maintenance or shelved at once; beyond, a command is rejected
RECENT_ALERTS = 10_000  # alert ids that can still be acknowledged (oldest cleared forgotten first)
PAST_PER_HOLD = 4  # ended holds kept per asset and kind, to judge readings processed late by their time
SENDS_ASSETS = 1_000  # assets whose sends are kept (a day past their expiry); the oldest go first
ALERTS_EXPORTED = 1_000  # an asset's newest alerts passed on to its next owner (a NATS message holds 1 MB)


@dataclass(frozen=True)
class Control:
    """An asset's maintenance or shelving: since and until (wall clock; None: open-ended)."""

    kind: str  # maintenance | shelved
    since: float
    until: float | None
    reason: str = ""
    by: str = ""


class AlarmControls:
    """Each asset's maintenance and shelving, and the alerts that can be acknowledged; shared by
    the command thread and the scoring worker (:meth:`suppressed`) under one lock."""

    def __init__(self, state_dir: str | None = None, max_controls: int = MAX_CONTROLS,
                 writes: StateWrites | None = None, forgotten: Counter | None = None) -> None:
        self.state_dir = state_dir
        self.max_controls = max_controls
        self.writes = writes or StateWrites(directory=state_dir)  # failed writes (the daemon's: counted)
        self.forgotten = forgotten  # alerts_forgotten_total (the daemon's; None: counted here only)
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer at a time, newest snapshot last
        self._controls: dict[tuple[str, str], Control] = {}  # (asset, kind) -> control
        self._alerts: dict[str, dict] = {}  # recent alert ids -> {"asset", "acked", "false_alarm"}, raise order
        self._newest: dict[str, str] = {}  # asset -> its newest alert id here (the only one that can be up)
        self._past: dict[tuple[str, str], tuple[tuple[float, float], ...]] = {}  # ended holds: (since, end)
        self._sends: dict[str, dict[str, float]] = {}  # asset -> sends carried out (Command.send) -> expires
        self.sends_forgotten = 0  # sends dropped past SENDS_ASSETS before they expired
        self.alerts_forgotten = 0  # alerts dropped past RECENT_ALERTS before an acknowledgement (one is refused now)
        self._forgotten_said = 0  # alerts_forgotten as the last line about it said
        self._sends_swept = -float("inf")  # when expired() last forgot the sends past SEND_KEPT_S
        self._limiter = RateLimiter(60.0)
        self.on_change: Callable[[str], None] = lambda asset: None  # an asset's controls or alerts changed
        # a command's change written where the asset's next owner reads it, before the command is answered
        # (cluster mode: the state bucket; ClusterSource.save_controls); whether it was
        self.persist: Callable[[str, float], bool] = lambda asset, changed: True  # changed: when (monotonic)
        self.unreadable = False  # the file could not be read (set aside, or left where it was when that failed)
        if state_dir:
            self._load()

    def suppressed(self, asset: str, now: float, ts: float | None = None, after: float = 0.0,
                   kinds: tuple[str, ...] = ("maintenance", "shelved")) -> str | None:
        """``maintenance`` or ``shelved`` while one holds ``asset`` at wall time ``now``, or held it
        at reading time ``ts`` (a hold that has ended since, taken to end ``after`` seconds later:
        the recorder's guard band), else None.

        Readings processed late (the broker's backlog after an outage) were judged by the clock
        they were processed at: those from inside a maintenance that had ended meanwhile raised
        alerts and were recorded as normal data. A hold that is on now still holds whatever the
        reading's time, so a device clock running behind does not slip past its start."""
        if self._controls:
            with self._lock:
                for kind in kinds:
                    control = self._controls.get((asset, kind))
                    if control is not None and (control.until is None or now < control.until
                                                or (ts is not None and control.since <= ts < control.until + after)):
                        return kind
        if ts is not None and self._past:  # (tuples replaced whole: read without the lock)
            for kind in kinds:
                if any(since <= ts < end + after for since, end in self._past.get((asset, kind), ())):
                    return kind
        return None

    def _ended(self, asset: str, kind: str, since: float, end: float) -> None:
        """Keep a hold that ended (the caller holds the lock): the last ``PAST_PER_HOLD`` per asset and
        kind, of at most ``max_controls`` assets and kinds (the oldest forgotten first)."""
        key = (asset, kind)  # assigned whole, in place: readers without the lock never see it missing
        self._past[key] = (*self._past.get(key, ())[1 - PAST_PER_HOLD:], (since, end))
        while len(self._past) > self.max_controls:
            self._past.pop(next(iter(self._past)))

    def counts(self, now: float) -> dict[str, int]:
        """Assets held now, by kind (``maintenance``, ``shelved``)."""
        out = {"maintenance": 0, "shelved": 0}
        with self._lock:
            for (_, kind), c in self._controls.items():
                out[kind] += c.until is None or now < c.until
        return out

    def in_maintenance(self, asset: str, now: float, ts: float | None = None, after: float = 0.0) -> bool:
        # (maintenance only: a shelving on now must not hide a maintenance's guard band behind it)
        return self.suppressed(asset, now, ts, after, ("maintenance",)) == "maintenance"

    def expired(self, now: float) -> list[tuple[str, str]]:
        """Remove and return the ``(asset, kind)`` controls whose time is up."""
        with self._lock:
            done = [key for key, c in self._controls.items() if c.until is not None and now >= c.until]
            for key in done:
                control = self._controls.pop(key)
                self._ended(*key, control.since, float(control.until))
            # a send is kept SEND_KEPT_S past its expiry: a copy a revived session delivers later is
            # answered "carried out already", not "expired: send it again" (a walk: 686 s after).
            # Looked at once a minute, not at each call (every second: up to 64,000 of them)
            if now < self._sends_swept + 60.0:
                sends = []
            else:
                self._sends_swept, sends = now, list(self._sends.items())
            for asset, sent in sends:
                if not (kept := {k: e for k, e in sent.items() if now <= e + SEND_KEPT_S}):
                    del self._sends[asset]
                elif len(kept) < len(sent):
                    self._sends[asset] = kept
        if done:
            self.save()
            for asset in {asset for asset, _ in done}:
                self.on_change(asset)
        return done

    def raised(self, alert_id: str, asset: str, now: float | None = None, announced: bool = True) -> None:
        """An alert was raised at wall time ``now``: it can be acknowledged from now on. ``announced``
        False: a shelving or maintenance held it back, yet it is acknowledged as any other (a
        shelved valve test's alert answered "no alert to acknowledge", so it could never be taught
        as a false alarm: a walk); its time to acknowledge counts from its announcement, if any."""
        with self._lock:  # told again (a restart, a new owner re-announcing): its acknowledgement stands
            entry = self._alerts.setdefault(alert_id, {"asset": asset, "acked": False, "false_alarm": False})
            if announced and "raised_at" not in entry:
                entry["raised_at"] = time.time() if now is None else now
            self._newest[asset] = alert_id
            forgotten = self._evict()
        self.on_change(asset)
        self._forgotten(forgotten - {asset})

    def _evict(self) -> set[str]:
        """Forget the oldest alerts past ``RECENT_ALERTS``, those surely cleared first (the caller
        holds the lock); the assets whose alerts went. An asset has one alert up at most, its newest:
        the older ones are over. So in a flood of flapping alerts one still up on a quiet asset stays
        acknowledgeable (it was forgotten oldest-first, and the operator's ack then failed as "unknown
        or too old")."""
        assets = set()
        while len(self._alerts) > RECENT_ALERTS:
            over = next((i for i, e in self._alerts.items() if self._newest.get(e.get("asset")) != i), None)
            gone = self._alerts.pop(over if over is not None else next(iter(self._alerts)))
            if over is None:  # an asset's newest went: nothing of it is left here
                self._newest.pop(gone.get("asset"), None)
            assets.add(str(gone.get("asset", "")))
            if not gone.get("acked"):
                self.alerts_forgotten += 1
                if self.forgotten is not None:
                    self.forgotten.inc()
        return assets

    def _forgotten(self, assets: set[str]) -> None:
        """The alerts of ``assets`` that :meth:`_evict` forgot (the lock not held): their change is
        told (cluster mode rewrites each asset's controls key without them, or deletes it: unwritten,
        one key per asset that ever alerted stayed in the state bucket, and every takeover read them
        all back); those forgotten unacknowledged are said at most once a minute."""
        for asset in sorted(assets):
            self.on_change(asset)
        if assets and self.alerts_forgotten > self._forgotten_said and self._limiter.hit("alerts") is not None:
            self._forgotten_said = self.alerts_forgotten
            log.warning("alarm controls: more than %d recent alerts, the oldest forgotten: %d of them not "
                        "acknowledged so far, whose acknowledgement is now refused as unknown or too old",
                        RECENT_ALERTS, self.alerts_forgotten)

    def acked(self, alert_id: str) -> dict | None:
        """The acknowledgement of ``alert_id`` (``{"acked", "false_alarm"}``), if it is known."""
        with self._lock:
            entry = self._alerts.get(alert_id)
            return None if entry is None else dict(entry)

    def false_alarm(self, alert_id: str) -> bool | None:
        """How ``alert_id`` was acknowledged: True as a false alarm, False as real, None not (yet)."""
        with self._lock:
            entry = self._alerts.get(alert_id)
            return bool(entry["false_alarm"]) if entry is not None and entry["acked"] else None

    def apply(self, command: Command, now: float) -> tuple[bool, str, bool]:
        """Carry ``command`` out: ``(accepted, message, saved)``; persisted when accepted, and
        ``saved`` says whether that save worked (``controls.json`` holds the change; True when
        there was nothing to save). The save's own result, for the command's answer: the file's
        state read later could be another save's (:meth:`save` is also called each 30 s)."""
        with self._lock:
            accepted, message = self._apply(command, now)
            if accepted and command.send:
                self._sent(command)
        saved = True
        if accepted:
            saved = self.save()
            self.on_change(command.asset)
            saved = self.persist(command.asset, time.monotonic()) and saved  # ("accepted", the hold was lost with a
            # cluster worker killed before the bucket's next flush: a walk)
        return accepted, message, saved

    def carried_out(self, c: Command) -> bool:
        """Whether this very send of ``c`` (:attr:`Command.send`) was carried out here, or by the run
        or worker this asset's controls came from (kept ``SEND_KEPT_S`` past its expiry): a revived
        session's copy of an earlier send must not undo a later one, nor be told to send it again."""
        with self._lock:
            return bool(c.send) and c.send in self._sends.get(c.asset, {})

    def _sent(self, c: Command) -> None:
        """Keep an accepted send (the caller holds the lock), at most ``SENDS_KEPT`` per asset and
        ``SENDS_ASSETS`` assets, the oldest dropped first, and at most ``SEND_KEPT_S`` (an
        ``expires`` may be any time before 2200); :meth:`expired` forgets them once they expire. A
        flood of commands to new assets with far ``expires`` grew controls.json, rewritten at every
        command, past a megabyte with no cap (a walk)."""
        sent = self._sends[c.asset] = self._sends.pop(c.asset, {})  # the asset commanded last goes last
        sent[c.send] = min(float(c.expires), time.time() + SEND_KEPT_S)  # type: ignore[arg-type]  # (a send has one)
        if len(sent) > SENDS_KEPT:
            del sent[next(iter(sent))]
        self._bound_sends()

    def _bound_sends(self) -> None:
        """Forget the sends of the assets commanded longest ago past ``SENDS_ASSETS`` (the caller holds the lock)."""
        while len(self._sends) > SENDS_ASSETS:
            forgotten = self._sends.pop(next(iter(self._sends)))
            self.sends_forgotten += len(forgotten)
            if self._limiter.hit("sends") is not None:
                log.warning("alarm controls: commands of more than %d assets kept against a copy delivered "
                            "again (a day past their expiry): the oldest are forgotten (%d so far); a copy of one "
                            "delivered again would be carried out again", SENDS_ASSETS, self.sends_forgotten)

    def _apply(self, c: Command, now: float) -> tuple[bool, str]:
        if c.verb == "ack":
            entry = self._alerts.get(c.alert_id)
            if entry is None:
                return False, f"no alert {c.alert_id!r} to acknowledge (unknown or too old)"
            if not entry["acked"]:
                entry["acked_at"] = now  # the first acknowledgement: time to acknowledge ends
            entry.update(acked=True, false_alarm=c.false_alarm)
            return True, f"alert {c.alert_id} acknowledged" + (" as a false alarm" if c.false_alarm else "")
        kind = "shelved" if c.verb == "shelve" else "maintenance"
        if c.action == "end" or (c.verb == "shelve" and c.until is not None and c.until <= now):
            ended = self._controls.pop((c.asset, kind), None)
            if ended is None:
                return False, f"{c.asset} is not {'shelved' if kind == 'shelved' else 'in maintenance'}"
            self._ended(c.asset, kind, ended.since, now if ended.until is None else min(now, ended.until))
            return True, f"{c.asset}: {'unshelved' if kind == 'shelved' else 'maintenance ended'}"
        if (c.asset, kind) not in self._controls and len(self._controls) >= self.max_controls:
            return False, f"{self.max_controls} assets are in maintenance or shelved already"
        held = self._controls.get((c.asset, kind))  # extended or changed: the hold still began then
        self._controls[(c.asset, kind)] = Control(kind, now if held is None else held.since, c.until, c.reason, c.by)
        # (a time a person reads: epoch seconds in the reply were found by a walk through the README)
        until = ("until `maintenance end`" if c.until is None
                 else "until " + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(c.until)))
        return True, f"{c.asset}: {'shelved' if kind == 'shelved' else 'in maintenance'} {until}"

    def export(self, asset: str) -> dict | None:
        """Cluster mode: ``asset``'s controls and recent alerts, for its next owner (None: nothing); its
        newest ``ALERTS_EXPORTED`` alerts (its one alert up among them): a flapping asset's every alert
        kept here (up to 10,000: 1.3 MB) was over NATS's message limit, and its key never written."""
        with self._lock:
            controls = [asdict(c) for (a, _), c in self._controls.items() if a == asset]
            alerts = {i: dict(e) for i, e in self._alerts.items() if e.get("asset") == asset}
            if len(alerts) > ALERTS_EXPORTED:
                kept = list(alerts)[-ALERTS_EXPORTED:]
                if (newest := self._newest.get(asset)) in alerts and newest not in kept:
                    kept = [*kept[1:], newest]  # (last: the next owner takes the last one as the newest)
                alerts = {i: alerts[i] for i in kept}
            past = [[kind, *span] for (a, kind), spans in self._past.items() if a == asset for span in spans]
            sends = dict(self._sends.get(asset, {}))
        doc = {"controls": controls, "alerts": alerts, "past": past, **({"sends": sends} if sends else {})}
        return doc if controls or alerts or past or sends else None

    def adopt(self, asset: str, doc: dict, save: bool = True) -> None:
        """Take ``asset``'s controls and recent alerts over from its previous owner (:meth:`export`;
        cluster mode, or a worker folder at start); they replace what was here of it. ValueError for
        a bad ``doc``. ``save=False``: the caller saves once after many."""
        try:
            controls = [Control(str(c["kind"]), float(c["since"]), None if c["until"] is None else float(c["until"]),
                                str(c.get("reason", "")), str(c.get("by", ""))) for c in doc.get("controls", [])]
            sends = read_sends(doc.get("sends", {}))
            alerts = usable_alerts({str(i): e | {"asset": asset} if isinstance(e, dict) else e
                                    for i, e in doc.get("alerts", {}).items()}, f"the alarm controls of {asset}")
            past = [(str(kind), float(since), float(end)) for kind, since, end in doc.get("past", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"invalid alarm controls ({exc})") from None
        if any(kind not in ("maintenance", "shelved") for kind in [c.kind for c in controls] + [p[0] for p in past]):
            raise ValueError("invalid alarm controls (unknown kind)")
        with self._lock:
            self._drop(asset)
            for kind, since, end in past:
                self._ended(asset, kind, since, end)
            self._controls.update({(asset, c.kind): c for c in controls})
            if sends:
                self._sends[asset] = sends
                self._bound_sends()
            self._alerts.update(alerts)
            self._newest = newest(self._alerts)
            forgotten = self._evict()
        self._forgotten(forgotten)  # (this asset's too: the key read holds what was forgotten)
        if save:
            self.save()

    def assets(self) -> set[str]:
        """Assets with a control, a recent alert or an ended hold here."""
        with self._lock:
            return ({a for a, _ in self._controls} | {e.get("asset", "") for e in self._alerts.values()}
                    | {a for a, _ in self._past})

    def forget(self, assets: set[str]) -> None:
        """Cluster mode: ``assets`` moved to another worker, which holds their controls now."""
        with self._lock:
            for asset in assets:
                self._drop(asset)
        self.save()

    def _drop(self, asset: str) -> None:
        for key in [key for key in self._controls if key[0] == asset]:
            del self._controls[key]
        for alert_id in [i for i, e in self._alerts.items() if e.get("asset") == asset]:
            del self._alerts[alert_id]
        self._newest.pop(asset, None)
        self._sends.pop(asset, None)
        for kind in ("maintenance", "shelved"):
            self._past.pop((asset, kind), None)

    def save(self, strict: bool = False) -> bool:
        """Write the controls and recent alerts to ``state_dir`` atomically (no state_dir: nothing);
        whether the file holds them now. A failure is counted and logged (the next save tries again)
        and False, or raised with ``strict``."""
        if not self.state_dir:
            return True
        with self._save_lock:
            with self._lock:
                body = {"controls": [asdict(c) | {"asset": a} for (a, _), c in self._controls.items()],
                        "alerts": self._alerts,
                        "past": [[a, kind, *span] for (a, kind), spans in self._past.items() for span in spans],
                        "sends": self._sends}
                text = json.dumps(body, separators=(",", ":"))
            try:
                Path(self.state_dir).mkdir(parents=True, exist_ok=True)
                write_durably(Path(self.state_dir) / CONTROLS, text)
            except OSError as exc:  # a full disk must not stop serving; the next save tries again
                tell = self.writes.failed(CONTROLS, exc)
                if strict:
                    raise
                log.log(logging.WARNING if tell else logging.DEBUG, "saving alarm controls to %s failed: %s (the "
                        "next save tries again; said again in %.0f min if it still fails, each failure counted)",
                        self.state_dir, exc, REPEAT_S / 60)
                return False
        self.writes.worked(CONTROLS)
        return True

    def _load(self) -> None:
        path = Path(self.state_dir or ".") / CONTROLS
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            for raw in doc.get("controls", []):
                until = None if raw["until"] is None else float(raw["until"])
                if raw["kind"] not in ("maintenance", "shelved"):
                    raise ValueError(f"unknown control {raw['kind']!r}")
                control = Control(raw["kind"], float(raw["since"]), until, str(raw.get("reason", "")),
                                  str(raw.get("by", "")))
                self._controls[(str(raw["asset"]), control.kind)] = control
            self._alerts = usable_alerts({str(k): v for k, v in doc.get("alerts", {}).items()}, str(path))
            self._newest = newest(self._alerts)
            for asset, kind, since, end in doc.get("past", []):  # (files before session 32 have none)
                if kind not in ("maintenance", "shelved"):
                    raise ValueError(f"unknown control {kind!r}")
                self._ended(str(asset), kind, float(since), float(end))
            self._sends = {str(a): sent for a, raw in list(doc.get("sends", {}).items())[-SENDS_ASSETS:]
                           if (sent := read_sends(raw))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # (RecursionError: JSON nested too deep; it escaped, and each start crashed: a restart loop)
            self._controls, self._alerts, self._newest, self._past, self._sends = {}, {}, {}, {}, {}
            self.unreadable = True
            # set aside with a line saying where the holds are found again: the next save (within
            # 30 s) overwrote it, every maintenance, shelving and acknowledgement gone without a trace
            _, where = move_aside(path.parent, CONTROLS)
            audits = audit_files(path.parent)
            again = "re-issue the holds still due" + (
                f" from the accepted commands in {' and '.join(audits)}" if audits else "")
            log.warning("alarm controls in %s unreadable (%s); %s, starting without maintenance, shelving or "
                        "acknowledgements: %s", path, first_line(exc), where, again)
