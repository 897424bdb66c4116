"""The on-disk outbox: order, durability, bounds, corrupt files and a full disk."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from assistant.outbox import Outbox


def _topics(box: Outbox, after: int = 0, limit: int = 1000) -> list[str]:
    return [m.topic for m in box.peek(after, limit)]


def test_fifo_order_ack_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    seqs = [box.put(f"t/{i}", f"p{i}".encode()) for i in range(10)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    assert _topics(box, limit=3) == ["t/0", "t/1", "t/2"]
    assert _topics(box, after=seqs[7]) == ["t/8", "t/9"]
    box.ack(seqs[:4])
    box.ack([999_999])  # unknown seqs are ignored
    assert len(box) == 6
    box.close()

    again = Outbox(path)
    assert len(again) == 6
    assert _topics(again) == [f"t/{i}" for i in range(4, 10)]
    assert again.peek(0, 1)[0].payload == b"p4"
    # Sequence numbers keep growing after a restart, even once the outbox is empty.
    again.ack([m.seq for m in again.peek(0, 100)])
    assert len(again) == 0
    assert again.put("t/next", b"x") > seqs[-1]
    again.close()


def test_put_many_is_one_transaction_with_qos_and_retain(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    seqs = box.put_many([("a", b"1"), ("b", b"2")], qos=0, retain=True)
    assert seqs[1] == seqs[0] + 1
    first = box.peek(0, 1)[0]
    assert (first.topic, first.qos, first.retain) == ("a", 0, True)
    box.close()


def test_bounded_size_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_messages=5)
    for i in range(8):
        box.put(f"t/{i}", b"x")
    assert len(box) == 5
    assert box.dropped == 3
    assert _topics(box) == [f"t/{i}" for i in range(3, 8)]
    box.close()
    again = Outbox(path, max_messages=5)
    assert again.dropped == 3
    again.close()


def test_corrupt_database_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with caplog.at_level(logging.ERROR, logger="assistant.outbox"):
        box = Outbox(path)
    assert "corrupt" in caplog.text and str(path) in caplog.text
    aside = list(tmp_path.glob("o.sqlite.corrupt-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not")
    box.put("t", b"fresh")
    assert _topics(box) == ["t"]
    box.close()


def test_full_disk_keeps_messages_in_memory_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    box.put("t/0", b"x")
    # A database capped at its current size behaves exactly like a full disk.
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    big = b"y" * 50_000
    with caplog.at_level(logging.ERROR, logger="assistant.outbox"):
        box.put("t/1", big)
        box.put("t/2", big)
    assert "disk full" in caplog.text
    assert box.in_memory == 2 and len(box) == 3
    assert _topics(box) == ["t/0", "t/1", "t/2"]
    # Delivery of an in-memory message just removes it from memory.
    box.ack([box.peek(0, 1)[0].seq])
    assert _topics(box) == ["t/1", "t/2"]
    # Space again: the next put writes everything, in order.
    box._db.execute("PRAGMA max_page_count=1073741823")
    box.put("t/3", b"z")
    assert box.in_memory == 0
    box.close()
    again = Outbox(path)
    assert _topics(again) == ["t/1", "t/2", "t/3"]
    assert again.peek(0, 1)[0].payload == big
    again.close()


def test_concurrent_put_and_ack_lose_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    produced = 300
    seen: list[str] = []
    done = threading.Event()

    def producer() -> None:
        for i in range(produced):
            box.put("t", str(i).encode())
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    last = 0
    while not (done.is_set() and len(box) == 0):
        batch = box.peek(last, 16)
        seen += [m.payload.decode() for m in batch]
        if batch:
            last = batch[-1].seq
            box.ack([m.seq for m in batch])
    thread.join()
    assert seen == [str(i) for i in range(produced)]
    box.close()


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception, match="outbox"):
        Outbox(blocker / "sub" / "o.sqlite")


def test_wal_mode(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.close()
    db = sqlite3.connect(tmp_path / "o.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
