"""service/signals.py: a signal's action runs on a relay thread, never inside the interrupted code.

Found by CI: ``sensorguard replay`` ignored SIGTERM for a minute. Its handler called ``stop.set()``
on the main thread, which was inside ``stop.wait()`` holding the event's lock: set() waited for
that lock forever. ``serve`` and its workers stopped the same way.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_a_signal_landing_while_the_main_thread_holds_the_events_lock_still_sets_it():
    """The race made certain: the signal is raised inside the section of Event.wait that holds its
    lock (a bare ``stop.set`` handler deadlocks here, and the subprocess times out)."""
    out = _run("""
        import signal, threading
        from sensorguard.service.signals import on_signals
        stop = threading.Event()
        on_signals({signal.SIGUSR1: stop.set})
        with stop._cond:  # where Event.wait is before it sleeps
            signal.raise_signal(signal.SIGUSR1)  # the handler runs at the next bytecode, on this thread
            inside = True
        print("set" if stop.wait(10) else "not set")
    """, timeout=20)
    assert out.returncode == 0 and out.stdout.strip() == "set", (out.stdout, out.stderr)


def test_sigterm_stops_a_main_thread_that_waits_on_the_event_every_time():
    """Real signals from outside at random moments into a loop that is mostly inside Event.wait's
    locked section: with a bare ``stop.set`` handler about half of such processes never ended."""
    code = textwrap.dedent("""
        import signal, threading
        from sensorguard.service.signals import on_signals
        stop = threading.Event()
        on_signals({signal.SIGTERM: stop.set})
        print("ready", flush=True)
        while not stop.is_set():
            stop.wait(0)
        print("stopped", flush=True)
    """)
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)  # (a stalled child fails, not hangs)
            assert ready and proc.stdout.readline().strip() == "ready"
            time.sleep(0.01 * attempt)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and out.strip() == "stopped", (attempt, proc.returncode, out)


def test_an_action_that_fails_is_logged_and_the_next_signal_is_still_handled():
    out = _run("""
        import os, signal, threading
        from sensorguard.service.signals import on_signals
        calls, done = [], threading.Event()
        def action():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("first reload failed")
            done.set()
        on_signals({signal.SIGUSR2: action})
        os.kill(os.getpid(), signal.SIGUSR2)
        while not calls:
            threading.Event().wait(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)
        print("handled twice" if done.wait(10) else f"handled {len(calls)}")
    """)
    assert out.returncode == 0 and out.stdout.strip() == "handled twice", (out.stdout, out.stderr)
    assert "handling signal SIGUSR2 failed" in out.stderr and "first reload failed" in out.stderr


def test_signals_install_only_on_the_main_thread_with_a_readable_error():
    import threading

    from sensorguard.service.signals import on_signals

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(errors, lambda: on_signals({signal.SIGUSR1: print})))
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and "main thread" in str(errors[0])


def _catch(errors: list[BaseException], call) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        errors.append(exc)


def test_the_default_log_handler_writes_to_stderr_as_it_is_at_each_line(monkeypatch, capsys):
    """A handler bound to the stderr of its time wrote to a closed file once that stream was replaced
    (a test's capture, closed at its end): every later line printed "--- Logging error ---" and a
    traceback, which the next test read as the CLI's own (CI). The default handler follows stderr."""
    import io
    import logging
    import sys

    from sensorguard.service.logs import configure_logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(False, "INFO")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("sensorguard.test").warning("after the first stream closed")
    assert "after the first stream closed" in second.getvalue() and "Logging error" not in second.getvalue()
