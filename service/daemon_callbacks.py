"""What the daemon's parts and its scoring worker call back: the shadow's report written, whether a
reading falls in a maintenance, an asset the shadow forgets, a command accepted, the recorder flushed.

:class:`DaemonCallbacks` is the part of :class:`~sensorguard.service.daemon.Daemon` that the parts
it wires call (the recorder, the asset alerts, the command handler) and that the scoring worker and
the stop use; each is short and touches the parts the daemon owns. It is a mixin, not a class of its
own, because those parts are the daemon's; ``Daemon.__init__`` sets everything listed below. Kept
apart from the daemon's wiring and lifecycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sensorguard.service.alerts import AlertState
from sensorguard.service.assets import AssetAlerts
from sensorguard.service.command_messages import Command
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.hotswap import ModelHolder
from sensorguard.service.jetstream import ClusterSource
from sensorguard.service.logs import counted
from sensorguard.service.metrics import Metrics
from sensorguard.service.recorder import Recorder
from sensorguard.service.shadow import report_live
from sensorguard.service.windows import Buffers

# The daemon's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.daemon")


class DaemonCallbacks:
    """Called back by the parts and by the scoring worker (a mixin of
    :class:`~sensorguard.service.daemon.Daemon`, which owns the attributes declared here)."""

    settings: Settings
    metrics: Metrics
    buffers: Buffers
    models: ModelHolder
    alerts: AssetAlerts
    recorder: Recorder | None
    controls: AlarmControls
    source: ClusterSource | None
    _reporting: threading.Thread | None  # the shadow report being written
    _record_dropped: int  # recorder drops already counted in the metric
    snapshot: Callable[[], dict[str, AlertState]]  # (a method of Daemon)

    def _report_shadow(self, wait_s: float = 0.0) -> None:
        """Write the shadow's live counts to the registry on a thread of its own (waited for up to
        ``wait_s``): on the scoring worker a stalled registry share froze scoring, and at stop it
        came before the final states and ``offline`` (found by review). One write at a time."""
        if self._reporting is not None and self._reporting.is_alive():
            log.warning("the previous shadow report is still being written: skipped")
            return
        self._reporting = threading.Thread(target=report_live, name="shadow-report", daemon=True,
                                           args=(self.settings, self.models.shadow, self.models.shadow_failed))
        self._reporting.start()
        if wait_s:
            self._reporting.join(wait_s)

    def _in_maintenance(self, asset: str, ts: float) -> bool:
        """Whether a reading at ``ts`` falls in a maintenance of ``asset``, or in the guard band after
        one ended (the start-up transient): nothing of it is recorded as normal data. The band was
        applied only to assets scored through the end, not to one silent then (switched off)."""
        guard = self.recorder.guard_s if self.recorder is not None else 0.0
        return self.controls.in_maintenance(asset, time.time(), ts, after=guard)

    def _shadow_forgets(self, asset: str) -> None:
        """The asset went silent or moved to another worker: the shadow's machines for it end too
        (scoring thread); a shadow that kept them counted the current model's alerts again when the
        asset came back under an alert id raised elsewhere."""
        if (shadow := self.models.shadow) is not None:
            shadow.forget(asset)

    def _commanded(self, asset: str, c: Command) -> str:
        """A command was accepted (the command thread): the worker applies what changes for ``asset``;
        an acknowledgement files the alert's recorded readings (what became of them: the reply)."""
        self.alerts.request_control_change(asset, (c.action == "start") if c.verb == "maintenance" else None)
        if c.verb == "ack" and self.recorder is not None:
            return self.recorder.acknowledged(c.alert_id)
        holds = c.action == "start" or (c.verb == "shelve" and (c.until or 0) > time.time())  # (not an unshelve)
        if holds and asset not in self.buffers and asset not in self.snapshot() and asset not in self.alerts.restored:
            if self.source is not None:  # cluster mode: an asset silent when its partition came here is no typo, and
                # its retained state, from an earlier owner, is listed now, without the hold (a walk: "a typo?
                # ... lists it from then" while `alerts` listed it unheld)
                return (f"note: no reading of {asset} has reached {self.settings.instance_name} since it took the "
                        "asset's partition (silent since, or a typo?); it holds from its first reading, and its "
                        "state that `sensorguard alerts` lists shows the hold from then")
            return (f"note: no reading of {asset} has reached {self.settings.instance_name} yet (a typo? it serves "
                    f"{counted(len(self.buffers), 'asset')} now); it holds from its first reading, and "
                    "`sensorguard alerts` lists it from then")  # (it shows retained states: a walk looked there)
        return ""

    def _flush_recorder(self, force: bool = False) -> None:
        if self.recorder is None:
            return
        if failures := self.recorder.flush_safely(force=force):
            self.metrics.record_write_failures.inc(failures)
        if (dropped := self.recorder.dropped - self._record_dropped) > 0:
            self.metrics.record_dropped.inc(dropped)
            self._record_dropped = self.recorder.dropped
