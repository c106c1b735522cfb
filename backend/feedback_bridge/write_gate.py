"""A queue in front of SQLite's write lock, for the threads and processes of one database file.

SQLite does not queue writers: one that finds the database locked sleeps in its busy handler, 1, 2, 5, 10 ... up
to 100 ms at a time, and retries. Under steady writes a waiter that has backed off loses the lock again and again
to newcomers that try at the right moment: with 8 concurrent writers, 1 in 100 requests waited 150-600 ms, and
some over a second, while the lock itself is held ~1 ms per transaction. Here writers wait on an ``flock`` of a
file beside the database instead (one thread per process, the others on a lock in the process), which the kernel
hands on as soon as it is released. SQLite's own locking is unchanged and still decides: the gate only orders
who asks first, and a writer that is not behind it (another program, a gate that timed out) waits as before.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: no flock; the threads of a process still queue, processes wait as SQLite has them
    fcntl = None  # type: ignore[assignment]

_gates: weakref.WeakSet[WriteGate] = weakref.WeakSet()


class WriteGate:
    def __init__(self, database: str, timeout: float) -> None:
        self.path = f"{database}.write-lock"
        self.timeout = timeout
        self._threads = threading.Lock()  # the threads of this process, one at a time at the file lock
        self._fd: tuple[int, int] | None = None  # (pid, fd): a forked child opens its own (its own flock)
        _gates.add(self)

    def _after_fork(self) -> None:
        self._threads = threading.Lock()  # a lock held by another thread at the fork would never be released

    @contextmanager
    def hold(self) -> Iterator[None]:
        # Bounded like SQLite's busy timeout: past it, go on without the gate and let SQLite decide.
        if not self._threads.acquire(timeout=self.timeout):
            yield
            return
        try:
            fd = self._file()
            if fd is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _file(self) -> int | None:
        """The lock file's descriptor for this process (called with ``_threads`` held); None if it cannot be
        opened (a read-only folder, say): then writers wait as SQLite has them."""
        pid = os.getpid()
        if fcntl is None:
            return None
        if self._fd is None or self._fd[0] != pid:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError:
                return None
            self._fd = (pid, fd)
            weakref.finalize(self, os.close, fd)  # engines come and go (tests, apps): their files must not pile up
        return self._fd[1]


os.register_at_fork(after_in_child=lambda: [gate._after_fork() for gate in list(_gates)])
