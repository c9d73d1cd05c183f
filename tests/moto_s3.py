"""moto's S3-compatible server as a process on 127.0.0.1 (moto[server]: the STAND-IN for Amazon S3,
which cannot run here), optionally serving HTTPS with a given certificate."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from authz.local.stack import wait_listening
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
        wait_listening(port, 30, proc, "moto_server")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
