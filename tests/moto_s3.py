"""moto's S3-compatible server as a process on 127.0.0.1 (moto[server]: the STAND-IN for Amazon S3,
which cannot run here), optionally serving HTTPS with a given certificate."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.pg import free_port


@contextlib.contextmanager
def moto_server(tls: tuple[str, str] | None = None) -> Iterator[int]:
    """Start moto_server on a free port of 127.0.0.1 and yield the port; ``tls``: (certificate file,
    key file) to serve HTTPS."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    if tls is not None:
        args += ["-c", tls[0], "-k", tls[1]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
