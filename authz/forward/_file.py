"""Local NDJSON file sink: one event per line, fsynced before acknowledging, rotated by size.

Rotation keeps ``path``, ``path.1`` (newest) … ``path.<keep>``; the oldest is deleted. A batch is never
split across files, so a batch resent after a crash can duplicate lines but never lose one (each line
carries its chain hash for deduplication).

A forwarder killed in the middle of a write can leave the file ending in part of a line (the kernel stops
a write between pages when the process is killed). The next write first cuts that fragment off, back to
the last complete line: appended to, it would have merged with the next event into one line no reader
can parse. Its events were never acknowledged, so they are sent again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from authz.forward._event import ForwardEvent
from authz.forward._sink import Ack, Outcome


class NdjsonFileSink:
    def __init__(self, name: str, path: str | Path, *, max_bytes: int = 100 * 1024 * 1024, keep: int = 5):
        if max_bytes < 1 or keep < 0:
            raise ValueError("max_bytes must be positive and keep not negative")
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep

    def _rotate(self) -> None:
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            if newer.exists():
                os.replace(newer, older)

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_line(self.path)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        # A local append of at most one batch: short enough to run on the loop (no thread hop per batch).
        self._write(b"".join(event.ndjson_line() for event in batch))
        return Ack()

    async def aclose(self) -> None:
        return None


#: How much of the file's end is read at a time looking for the last complete line.
_TAIL_CHUNK = 64 * 1024


def _drop_torn_line(path: Path) -> None:
    """Cut ``path`` back to its last newline when it does not end with one (see the module docstring)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        os.ftruncate(fd, keep)
        os.fsync(fd)
    finally:
        os.close(fd)
