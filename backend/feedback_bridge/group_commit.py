"""Group commit: requests that arrive while a write is committing are written together, in one transaction.

Single-event posts are the common case (each user's widget sends its own), and one transaction per event spends
most of its time on per-transaction and per-statement costs that a batch shares. Writers queue in arrival order;
the one at the front (the leader) takes the writers behind it, up to a limit, commits all their items as one
batch and hands each writer its own results. No thread of its own, and no waiting for company: a writer that
finds the queue empty commits at once, alone. LevelDB groups its writers the same way.

Every writer still gets its answer only after its items are committed. If a group's transaction fails, each of
its writers is retried alone, so one request's failure never becomes another's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Writer(Generic[Item, Result]):
    __slots__ = ("done", "error", "items", "results")

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.results: list[Result] = []
        self.error: BaseException | None = None
        self.done = False

    def outcome(self) -> list[Result]:
        if self.error is not None:
            raise self.error
        return self.results


class GroupCommit(Generic[Item, Result]):
    """``submit(items)`` returns ``commit(items)``, run together with other threads' concurrent submissions.

    ``commit`` takes a list of items and returns one result per item, in order; it must give each item the
    result it would get if the groups' lists were committed one after another (``Store.ingest`` does).
    """

    def __init__(self, commit: Callable[[list[Item]], list[Result]], *, max_items: int = 500) -> None:
        self._commit = commit
        self._max_items = max_items
        self._queue: deque[_Writer[Item, Result]] = deque()
        self._changed = threading.Condition()

    def submit(self, items: Sequence[Item]) -> list[Result]:
        writer: _Writer[Item, Result] = _Writer(list(items))
        with self._changed:
            self._queue.append(writer)
            while not writer.done and self._queue[0] is not writer:
                self._changed.wait()
            if writer.done:  # a leader committed it
                return writer.outcome()
            group = self._take_group()
        try:
            self._run(group)
        finally:
            with self._changed:
                for _ in group:
                    self._queue.popleft()
                for member in group:
                    if member.error is None and len(member.results) != len(member.items):
                        # the leader was interrupted (a BaseException) before it got to this writer
                        member.error = RuntimeError("The write was interrupted before it was committed.")
                    member.done = True
                self._changed.notify_all()
        return writer.outcome()

    def _take_group(self) -> list[_Writer[Item, Result]]:
        """The leader and the writers behind it, while their items fit in the limit (the leader always)."""
        group, size = [], 0
        for writer in self._queue:
            if group and size + len(writer.items) > self._max_items:
                break
            group.append(writer)
            size += len(writer.items)
        return group

    def _run(self, group: list[_Writer[Item, Result]]) -> None:
        if len(group) > 1:
            try:
                results = self._commit([item for writer in group for item in writer.items])
            except Exception:
                pass
            else:
                start = 0
                for writer in group:
                    writer.results = results[start:start + len(writer.items)]
                    start += len(writer.items)
                return
        for writer in group:
            try:
                writer.results = self._commit(writer.items)
            except Exception as exc:
                writer.error = exc
