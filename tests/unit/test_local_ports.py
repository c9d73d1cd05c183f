"""Ports for the servers a local stack starts: free, distinct, and never from the ephemeral range an
outgoing connection could take them from before the server binds."""

from __future__ import annotations

import socket
from pathlib import Path

from authz.local.stack import free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(1024 <= port < low for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # still free
