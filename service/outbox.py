"""What the daemon's full outgoing queue dropped and must send again: alert closes and retained states.

An alert's raise that the queue drops is simply not announced (it is told at a later window, if the
alert is still up). Two things cannot be dropped that way, because a subscriber would be left with
a lie: the *close* of an alert whose raise went out (a clear, or the ``silent`` event that ends it),
or a pager holds the alert open for good; and an asset's *retained state*, which otherwise says
``alerting`` until its next change, days later perhaps. :class:`Outbox` keeps both, bounded, and
sends them again, in order, each tick while the queue has room
(:class:`~sensorguard.service.assets.AssetAlerts` owns one, on the scoring worker's thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sensorguard.service.alerts import AlertEvent
from sensorguard.service.logs import RateLimiter
from sensorguard.service.metrics import Metrics
from sensorguard.service.publisher import Publisher
from sensorguard.service.sensors import SensorEvent

log = logging.getLogger(__name__)

UNSENT_PER_ASSET = 16  # dropped closes kept per asset (of raises that went out), oldest first
FORGOTTEN_LOG_S = 60.0  # a line about what the caps left out, at most this often

Close = tuple[AlertEvent | SensorEvent, list[dict] | str]  # (clear, its channels) or (silent, the alert id it ends)


def published(info: Any) -> bool:
    """Whether the broker confirmed a publish (None: nothing to confirm). paho's ``is_published``
    raises for one queued while disconnected (``rc`` NO_CONN stays set after paho resends it):
    its confirmation is then read from the handle itself."""
    if info is None:
        return True
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):
        return bool(getattr(info, "_published", False))


class Outbox:
    """Closes and retained states the full outgoing queue dropped, per asset, to send again.

    cap: assets kept at most in each (the oldest is forgotten beyond), as the silent assets are.
    What the caps leave out is lost for good: counted (``publishes_forgotten_total{kind}``, ``close``
    or ``state``) and logged at most every ``FORGOTTEN_LOG_S`` (a review: it went unsaid, so a close
    sent again later could not be told from one never sent).
    """

    def __init__(self, publisher: Publisher, cap: int, metrics: Metrics | None = None) -> None:
        self.publisher = publisher
        self.cap = cap
        self.metrics = metrics
        self._said, self._told = RateLimiter(FORGOTTEN_LOG_S), set()
        self._closes: dict[str, list[Close]] = {}
        self._states: dict[str, None] = {}  # assets whose retained state was dropped, oldest first

    def forgotten(self, kind: str, n: int) -> None:
        """``n`` closes (``close``) or retained states (``state``) left out by the caps: lost."""
        if self.metrics is not None:
            self.metrics.publishes_forgotten.labels(kind).inc(n)
        if (count := self._said.hit(kind)) is not None:
            what = "closes of announced alerts" if kind == "close" else "retained states"
            since = "since the last such line" if kind in self._told else "so far"
            self._told.add(kind)
            log.warning("the outgoing queue stayed full: %s to send again past what is kept (%d per asset, %d "
                        "assets): lost for good (%d %s)", what, UNSENT_PER_ASSET, self.cap, count, since)

    def keep_close(self, asset: str, event: AlertEvent | SensorEvent, extra: list[dict] | str) -> None:
        """Keep a dropped close of an announced alert (a clear and its channels, or the ``silent``
        event and the alert id it ends) to send again (:meth:`resend_closes`)."""
        kept = self._closes.setdefault(asset, [])
        if len(kept) < UNSENT_PER_ASSET:  # the oldest matter: their raises went out first
            kept.append((event, extra))
        else:
            self.forgotten("close", 1)
        if len(self._closes) > self.cap:
            self.forgotten("close", len(self._closes.pop(next(iter(self._closes)))))

    def holds_close(self, asset: str) -> bool:
        """Whether a close of ``asset`` still waits (a later clear must wait behind it)."""
        return asset in self._closes

    def resend_closes(self, send: Callable[[str, AlertEvent | SensorEvent, list[dict] | str], Any],
                      only: str | None = None) -> None:
        """Send again, in order, the closes kept (of ``only``, or of every asset) through ``send``
        (asset, event, extra) -> publish handle; nothing is tried while the queue is still full (each
        try would count another drop), and an asset's later closes wait while its first is dropped."""
        for asset in [only] if only is not None else list(self._closes):
            kept = self._closes.get(asset, [])
            while kept and not self.publisher.full():
                event, extra = kept[0]
                if self.publisher.dropped(send(asset, event, extra)):
                    return
                kept.pop(0)
            if kept:
                return  # still full: the next tick tries again
            self._closes.pop(asset, None)

    def state_sent(self, asset: str, info: Any) -> None:
        """``asset``'s retained state was just published with handle ``info``: kept to send again if
        the queue dropped it (the retained one now lies), forgotten if it went out."""
        if self.publisher.client is not None and self.publisher.dropped(info):
            self._states[asset] = None
            if len(self._states) > self.cap:
                self._states.pop(next(iter(self._states)))
                self.forgotten("state", 1)
        else:
            self._states.pop(asset, None)

    def states_lost(self, assets: list[str]) -> None:
        """The retained states of ``assets`` are to be sent again (the broker lost them)."""
        for asset in assets:  # (every asset served: bounded by max_assets, all sent again)
            self._states[asset] = None

    def resend_states(self, republish: Callable[[str], None]) -> None:
        """Publish again, through ``republish``, the retained states kept, while there is room."""
        for asset in list(self._states):
            if self.publisher.full():
                return
            self._states.pop(asset, None)
            republish(asset)
