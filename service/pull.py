"""A lean pull consumer for one partition: batches of readings without nats-py's per-message waits.

nats-py's ``fetch`` waits for every message of a batch with a task, a timer and a uuid of its own;
profiled draining a backlog with ``serve --cluster``, that was the largest cost on the event loop. A
pull request is only a message to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` whose reply
subject receives the batch, so here a subscription on a :class:`natswire.Wire` appends the messages
to a list as they are parsed and :meth:`Puller.fetch` hands the list over.

One request is outstanding at a time, asked for as soon as the last one ended (all its messages
came, or the server ended it: status 408 when it expired, 409 on a leader change), while ``may_ask()``
(the lease is surely ours) and fewer than a batch wait here; so the next batch travels while the
current one is taken, and what waits here is at most two batches. A request expires after
``expires_s``: a worker that stops asking (it gave the partition up) gets nothing after that, and
:meth:`Puller.close` waits for it before giving back what came meanwhile (``Wire.nak``: delivered
again at once, to the next owner, ahead of newer readings). A lost connection ends :meth:`fetch`
with :class:`natswire.WireError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from sensorguard.service.natswire import Delivery, Wire

LINGER_S = 0.002  # a batch still arriving is waited for while messages keep coming this often
FAILED_PAUSE_S = 0.2  # after a request the server refused (a leader election), the next waits this long
MAX_FAILURES = 25  # refused this many times in a row (5 s), the pull is set up again (PullError)


class PullError(RuntimeError):
    """The server keeps refusing pull requests (the consumer was deleted, the stream has no leader)."""


class Puller:
    """Pull requests for ``durable`` on ``stream``; :meth:`open`, :meth:`fetch` batches, :meth:`close`."""

    def __init__(self, wire: Wire, stream: str, durable: str, batch: int, expires_s: float,
                 may_ask: Callable[[], bool]) -> None:
        self.wire = wire
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.batch = batch
        self.expires_s = expires_s
        self.may_ask = may_ask
        self._inbox = wire.new_inbox()
        self._sid = b""
        self._got: list[Delivery] = []
        self._left = 0  # messages the outstanding request may still bring (0: none outstanding)
        self._until = 0.0  # when the outstanding request expires at the server (monotonic)
        self._arrived = asyncio.Event()
        self._failed = False  # the last request ended with an error status: the next one waits for fetch
        self._failures = 0  # requests refused in a row
        self._status = ""  # the last refusal, for the error

    def open(self) -> None:
        self._sid = self.wire.subscribe(self._inbox, self._on_message)

    def _on_message(self, msg: Delivery | None) -> None:
        """The wire's parser, for each message (None: the connection was lost)."""
        if msg is None:
            self._left = 0
        elif msg.status is None:
            self._got.append(msg)
            self._left -= 1
            self._failures = 0
        elif not msg.status.startswith("100"):  # 408: expired; 409 (a leader change), 503 (no leader)...: failed
            self._left = 0
            self._failed = not msg.status.startswith("408")
            self._failures = self._failures + 1 if self._failed else 0
            self._status = msg.status
        self._arrived.set()
        if msg is not None and self._left <= 0 and not self._failed:
            self._ask()

    def _ask(self) -> None:
        """Send the next request unless one is outstanding, a batch already waits, or ``may_ask`` says no."""
        now = time.monotonic()
        if self._left > 0 and now < self._until + 1.0:  # still outstanding (its 408 may be lost: 1 s grace)
            return
        if len(self._got) >= self.batch or not self.may_ask() or not self.wire.connected:
            self._left = 0
            return
        self._left, self._until = self.batch, now + self.expires_s
        body = json.dumps({"batch": self.batch, "expires": int(self.expires_s * 1e9)}).encode()
        self.wire.publish(self.subject, body, reply=self._inbox)

    async def fetch(self, timeout: float) -> list[Delivery]:
        """The messages that came (at most two batches), waiting up to ``timeout`` for the first; a
        batch still arriving is waited for while its messages keep coming."""
        self.wire.check()
        if self._failed and not self._got:  # the server refused the last request: ask again, not at once
            if self._failures >= MAX_FAILURES:  # the consumer is gone, or no leader: the caller sets up again
                self._failures = 0
                raise PullError(f"{MAX_FAILURES} pull requests refused in a row (last: {self._status or 'no status'})")
            self._failed = False
            await asyncio.sleep(min(timeout, FAILED_PAUSE_S))
            return []
        self._failed = False
        self._ask()
        if not self._got:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        seen = -1
        while self._got and len(self._got) != seen and len(self._got) < self.batch and self._left > 0:
            seen = len(self._got)
            await asyncio.sleep(LINGER_S)
        self.wire.check()  # lost meanwhile: what came cannot be acknowledged, it comes again after ack_wait
        got, self._got = self._got, []
        self._ask()  # the next batch travels while this one is taken
        return got

    async def close(self) -> list[Delivery]:
        """Stop asking; wait until the outstanding request can bring nothing more; the messages
        that came meanwhile (not taken: the caller gives them back)."""
        self.may_ask = lambda: False
        try:
            while self._left > 0 and self.wire.connected and time.monotonic() < self._until + 0.2:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), max(0.01, self._until + 0.2 - time.monotonic()))
        finally:
            self.wire.unsubscribe(self._sid)
        got, self._got = self._got, []
        return got
