"""The queue in front of SQLite's write lock (``feedback_bridge.write_gate``)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from feedback_bridge import db
from feedback_bridge.write_gate import WriteGate


def _locked_elsewhere(path: str) -> bool:
    """Whether another open file description (as another process has) can take the file lock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_write_transaction_holds_the_file_lock_other_processes_queue_on(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'gate.sqlite3'}")
    db.create_all(engine)
    lock_file = str(tmp_path / "gate.sqlite3.write-lock")
    try:
        with db.write(engine) as conn:
            conn.execute(text("SELECT 1"))
            assert _locked_elsewhere(lock_file)
        assert not _locked_elsewhere(lock_file)
        with pytest.raises(RuntimeError), db.write(engine):
            raise RuntimeError("rolled back")
        assert not _locked_elsewhere(lock_file)  # released on error too
        with db.read(engine) as conn:  # reads never queue
            conn.execute(text("SELECT 1"))
            assert not _locked_elsewhere(lock_file)
    finally:
        engine.dispose()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    gate = WriteGate(str(tmp_path / "db"), timeout=30)
    inside, release, done = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with gate.hold():
            order.append("first in")
            inside.set()
            release.wait()
            order.append("first out")

    def second() -> None:
        with gate.hold():
            order.append("second in")
        done.set()

    one = threading.Thread(target=first)
    one.start()
    inside.wait()
    two = threading.Thread(target=second)
    two.start()
    assert not done.wait(0.2)  # still waiting for the first
    release.set()
    one.join()
    two.join()
    assert order == ["first in", "first out", "second in"]


def test_past_its_timeout_a_writer_goes_on_without_the_gate(tmp_path: Path) -> None:
    gate = WriteGate(str(tmp_path / "db"), timeout=0.05)
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.hold():
            inside.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait()
    try:
        with gate.hold():  # SQLite's own busy timeout decides from here, as without the gate
            pass
    finally:
        release.set()
        thread.join()


def test_without_a_writable_folder_writers_wait_as_sqlite_has_them(tmp_path: Path) -> None:
    gate = WriteGate(str(tmp_path / "missing-folder" / "db"), timeout=30)
    with gate.hold():
        pass
