"""Local NDJSON file sink: one event per line, fsynced before acknowledging, rotated by size.

Rotation keeps ``path``, ``path.1`` (newest) … ``path.<keep>``; the oldest is deleted. A batch is never
split across files, so a batch resent after a crash can duplicate lines but never lose one (each line
carries its chain hash for deduplication).
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
