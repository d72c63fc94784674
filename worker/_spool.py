"""The local spool of a Redis sink: events that could not be delivered yet, as fsync'd JSON lines.

Each live sink owns one file, ``<time_ns>-<pid>-<random>.jsonl``, created at its first outage and held
with an exclusive flock, so a file that nobody can lock belongs to no living sink: an orphan. Sinks
adopt orphans (lock them, send them first, delete them), which is how events left by a process that
died during an outage reach Redis after it. Files are read back in name order, that is creation order.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("mocolab.worker.sink")


@dataclass
class Entry:
    """One serialised event; run_id and seq ride beside the JSON so the sender needs no parse."""

    run_id: str
    seq: int
    text: str


@dataclass
class SpoolFile:
    """One spool file. Its events stay on disk, never in memory: the sender reads them back `batch_max` at a
    time from `offset`, so a long outage costs disk space, not the worker's memory."""

    path: Path
    fh: IO[str]  # holds the flock for as long as it is open
    count: int = 0  # readable entries in the file
    sent: int = 0  # entries of this file already delivered
    offset: int = 0  # byte offset of the first line not yet delivered
    max_seq: dict[str, int] = field(default_factory=dict)

    def scan(self) -> None:
        """Count an adopted file's entries and their highest seq per run, one line at a time."""
        for entry in iter_entries(self.path):
            self.note(entry)

    def note(self, entry: Entry) -> None:
        self.count += 1
        self.max_seq[entry.run_id] = max(self.max_seq.get(entry.run_id, -1), entry.seq)

    def next_chunk(self, limit: int) -> tuple[list[Entry], int]:
        """Up to `limit` undelivered entries -> (entries, the offset just past them)."""
        return read_chunk(self.path, self.offset, limit)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)  # unlink before unlocking: no one can adopt a file being removed
        self.fh.close()


def _parse(line: bytes, path: Path) -> Entry | None:
    try:
        obj = json.loads(line)
        return Entry(str(obj["run_id"]), int(obj["seq"]), line.decode("utf-8").strip())
    except (ValueError, KeyError, TypeError):  # a line damaged by a crash mid-write
        log.warning("spool %s: skipping an unreadable line", path.name)
        return None


def read_chunk(path: Path, offset: int, limit: int) -> tuple[list[Entry], int]:
    """Up to `limit` entries from byte `offset` -> (entries, offset after them). A last line without its
    newline (cut short by a crash) is never read: its writer died before it was whole."""
    out: list[Entry] = []
    with path.open("rb") as fh:
        fh.seek(offset)
        while len(out) < limit:
            line = fh.readline()
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            entry = _parse(line, path)
            if entry is not None:
                out.append(entry)
    return out, offset


def iter_entries(path: Path) -> Iterator[Entry]:
    offset = 0
    while True:
        chunk, offset = read_chunk(path, offset, 1000)
        if not chunk:
            return
        yield from chunk


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backlog: list[SpoolFile] = []  # to send, oldest first; the own file, if any, is last
        self.own: SpoolFile | None = None

    def adopt_orphans(self) -> int:
        """Lock and queue every spool file no living sink holds; -> how many were adopted."""
        held = {f.path.name for f in self.backlog}
        adopted = []
        for path in sorted(self.dir.glob("*.jsonl")):
            if path.name in held:
                continue
            try:
                fh = path.open("a+", encoding="utf-8")
            except FileNotFoundError:  # removed by its sender meanwhile
                continue
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a living sink's file
                fh.close()
                continue
            if not path.exists():  # removed between our open and our lock
                fh.close()
                continue
            orphan = SpoolFile(path, fh)
            orphan.scan()
            adopted.append(orphan)
        if adopted:
            # orphans hold older events than anything this sink spooled: they go first
            own = [self.own] if self.own is not None and self.own in self.backlog else []
            self.backlog = [f for f in self.backlog if f is not self.own] + adopted + own
            log.info("adopted %d spool file(s) with %d events", len(adopted), sum(f.count for f in adopted))
        return len(adopted)

    def append(self, entries: list[Entry]) -> None:
        """Append to the own file and fsync it: once this returns, a crash cannot lose these events."""
        if not entries:
            return
        if self.own is None:
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            path = self.dir / name
            fh = path.open("a+", encoding="utf-8")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.own = SpoolFile(path, fh)
            self.backlog.append(self.own)
        own = self.own
        own.fh.write("".join(e.text + "\n" for e in entries))
        own.fh.flush()
        os.fsync(own.fh.fileno())
        for e in entries:
            own.note(e)

    def pending(self) -> int:
        return sum(f.count - f.sent for f in self.backlog)

    def max_seq(self, run_id: str) -> int | None:
        seqs = [f.max_seq[run_id] for f in self.backlog if run_id in f.max_seq]
        return max(seqs) if seqs else None

    def done(self, spool_file: SpoolFile) -> None:
        """Every entry of the file is delivered: remove it (the next outage starts a new own file)."""
        spool_file.remove()
        self.backlog.remove(spool_file)
        if spool_file is self.own:
            self.own = None

    def close(self) -> None:
        """Release the locks; files that still hold events stay for the next sink to adopt."""
        for f in self.backlog:
            if f.sent >= f.count:
                f.remove()
            else:
                f.fh.close()
        self.backlog = []
        self.own = None
