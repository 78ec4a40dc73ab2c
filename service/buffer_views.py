"""What the daemon reads of the per-asset buffers without changing them: a mixin of
:class:`~sensorguard.service.windows.Buffers`, which owns the attributes declared here and holds
every rule that changes them (admission, cadence, priming, forgetting).

Kept apart so ``windows.py`` reads as the rules a reading goes through; these are the questions
the ingest, the scoring worker and the state saves ask between readings (the caller holds the
ingest's lock, as for every call on the buffers).
"""

from __future__ import annotations

from collections.abc import Collection

from sensorguard.service.asset_buffer import AssetBuffer
from sensorguard.service.due_windows import DueWindows
from sensorguard.service.sensors import SensorRules


class BufferViews:
    """Read-only views of :class:`~sensorguard.service.windows.Buffers` (declared attributes: its own)."""

    _assets: dict[str, AssetBuffer]
    _untaken: dict[str, None]
    _due: DueWindows
    sensors: SensorRules | None
    resumed_past: dict[str, dict[str, float]]

    def faulted(self, asset: str) -> tuple[int, ...]:
        """Channels of ``asset`` with a sensor fault open now (none for an unknown asset)."""
        state = self._assets.get(asset)
        return () if state is None else state.watch.faulted()

    def pending_of(self, assets: set[str]) -> bool:
        """Whether a window of one of ``assets`` is queued."""
        return self._due.pending_of(assets)

    def queued(self) -> int:
        """Windows queued and not yet drained, the alert hop's too (what the scorer waits for)."""
        return len(self._due.windows)

    def pending(self) -> int:
        """Windows of the hop grid queued and not yet drained (what backpressure and the
        ``buffered_windows`` gauge count: the alert hop's are mostly dropped unscored)."""
        due = self._due
        return len(due.windows) - due.off_grid

    def __len__(self) -> int:
        return len(self._assets)

    def __contains__(self, asset: object) -> bool:
        return asset in self._assets

    def assets(self) -> list[str]:
        """Assets with a buffer, in the order they first sent an accepted sample."""
        return list(self._assets)

    def last_seen(self, asset: str) -> float | None:
        """``received`` of the asset's last accepted sample; None for an unknown asset."""
        state = self._assets.get(asset)
        return None if state is None else state.seen

    def last_ts(self, asset: str) -> float | None:
        """Reading time of the asset's last accepted sample; None for an unknown asset."""
        state = self._assets.get(asset)
        return None if state is None else state.last_ts

    def refused_since(self, asset: str) -> str | None:
        """Why the readings of ``asset`` were refused since its last one kept it alive, if they were."""
        state = self._assets.get(asset)
        return state.refused[0] if state is not None and state.refused and state.refused[1] > state.seen else None

    def taken(self, asset: str) -> bool:
        """Whether a reading of ``asset`` was taken into its window (or a sensor fault of it opened)
        since it got a buffer: only then does its silence end it with a ``silent`` fault."""
        return asset in self._assets and asset not in self._untaken

    def taken_ts(self, asset: str) -> float | None:
        """Reading time of the asset's last sample taken into its window (None: none yet). Unlike
        :meth:`last_ts` it does not move for a reading refused for its rate: a sender stepping one
        hour a message, each refused as ``slow_rate``, walked past the far-future check."""
        state = self._assets.get(asset)
        return None if state is None else state.cleaner.last_ts

    def last_row(self, asset: str) -> list[float] | None:
        """The asset's last accepted sample in channel order, forward fills included (not a copy:
        each accepted sample gets a new list, so it is never changed afterwards)."""
        state = self._assets.get(asset)
        return None if state is None else state.last

    def idle(self, before: float) -> list[str]:
        """Assets whose last accepted sample was received before ``before`` (stale candidates)."""
        return [asset for asset, state in self._assets.items() if state.seen < before]

    def past_limits(self, assets: Collection[str] | None = None) -> dict[str, dict[str, float]]:
        """Per asset (of ``assets``; None: all), its channels whose last plausible value is past their
        learned limits, with that value (:meth:`~sensorguard.service.sensors.SensorWatch.past_limits`;
        restored ones not heard from yet: as saved), for the state file or the state bucket. The
        caller holds the ingest's lock."""
        if self.sensors is None:
            return {}
        held = self._assets.items() if assets is None else (
            (a, state) for a in assets if (state := self._assets.get(a)) is not None)
        live = {a: p for a, state in held  # (a watch whose last reading was quiet: none past)
                if state.watch.may_be_past and (p := state.watch.past_limits(self.sensors))}
        resumed = self.resumed_past if assets is None else {a: p for a in assets if (p := self.resumed_past.get(a))}
        return {**{a: p for a, p in resumed.items() if a not in self._assets}, **live}

