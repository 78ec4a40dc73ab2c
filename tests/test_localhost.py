"""Free loopback ports for the demo's broker, the benchmarks and the tests' own brokers and daemons."""

from __future__ import annotations

import socket

import pytest

from sensorguard.service import localhost
from sensorguard.service.localhost import free_port, free_ports


def test_free_ports_lie_outside_the_range_outgoing_connections_take():
    """A port from the kernel's ephemeral range can be taken as the local end of any outgoing
    connection before the caller binds it (CI failed once on "Address already in use")."""
    low = localhost._ephemeral_low()
    if low == 0:
        pytest.skip(f"{localhost.EPHEMERAL_RANGE} is not readable here (not Linux): no ephemeral range to avoid")
    if low - localhost.PORTS_FROM < 2000:
        pytest.skip(f"the ephemeral range starts at {low}: no room below it, free_port falls back to the OS")
    ports = [free_port() for _ in range(20)] + free_ports(12)
    assert all(localhost.PORTS_FROM <= p < low for p in ports), ports


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(16)
    assert len(set(ports)) == 16
    socks = [socket.socket() for _ in ports]
    try:
        for sock, port in zip(socks, ports, strict=True):
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in socks:
            sock.close()


def test_a_port_in_use_is_never_handed_out(monkeypatch):
    """The random pick checks each port: a held one in the range is never returned."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(localhost, "PORTS_FROM", taken - 1199)  # the smallest range 50 ports are drawn from
        monkeypatch.setattr(localhost, "_ephemeral_low", lambda: taken + 1)  # the range holds the taken port
        tries = []
        real = localhost.port_free
        monkeypatch.setattr(localhost, "port_free", lambda port: tries.append(port) or real(port))
        picked = [p for _ in range(400) for p in free_ports(50)]  # 20,000 draws from 1,200 ports
        assert taken not in picked and all(taken - 1199 <= p <= taken for p in picked)
        assert taken in tries  # it was drawn and refused, not just missed


def test_a_range_past_the_last_port_is_clamped():
    assert not localhost.port_free(70000)  # refused, not an OverflowError
