"""Group commit: posts that arrive while another commits are written together, each answered on its own."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from conftest import register, runtime
from feedback_bridge import db
from feedback_bridge.group_commit import GroupCommit
from feedback_bridge.schema import events
from support import RecordingAdapter, event, wait_until
from test_outbox_review import PauseAt, in_thread


class HeldCommit:
    """A commit function that records every call and holds its first one until ``release`` is set."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        if self.fail_on in items:
            raise ValueError(f"cannot store {self.fail_on}")
        return [item.upper() for item in items]


def submit_in_threads(
    group: GroupCommit[str, str], *lists: list[str]
) -> tuple[list[dict[str, Any]], list[threading.Thread]]:
    """Submit each list from its own thread, one after another in queue order; the boxes of their outcomes."""
    boxes: list[dict[str, Any]] = []
    threads = []
    for items in lists:
        box: dict[str, Any] = {}

        def run(items: list[str] = items, box: dict[str, Any] = box) -> None:
            try:
                box["result"] = group.submit(items)
            except Exception as exc:  # asserted by the tests
                box["error"] = exc

        thread = threading.Thread(target=run)
        queued = len(group._queue)
        thread.start()
        wait_until(lambda queued=queued: len(group._queue) > queued, 30, "the writer to queue")
        boxes.append(box)
        threads.append(thread)
    return boxes, threads


def test_writers_arriving_during_a_commit_are_committed_together_in_order_each_with_its_results() -> None:
    commit = HeldCommit()
    group: GroupCommit[str, str] = GroupCommit(commit)
    boxes, threads = submit_in_threads(group, ["a"], ["b"], ["c", "d"])
    assert commit.entered.is_set() and commit.calls == [["a"]]  # the first writer commits alone, at once
    commit.release.set()
    for thread in threads:
        thread.join(30)
    assert commit.calls == [["a"], ["b", "c", "d"]]
    assert [box["result"] for box in boxes] == [["A"], ["B"], ["C", "D"]]
    assert not group._queue


def test_a_failing_group_is_retried_writer_by_writer_so_only_the_failing_one_gets_the_error() -> None:
    commit = HeldCommit(fail_on="bad")
    group: GroupCommit[str, str] = GroupCommit(commit)
    boxes, threads = submit_in_threads(group, ["a"], ["b"], ["bad"], ["c"])
    commit.release.set()
    for thread in threads:
        thread.join(30)
    assert commit.calls == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]
    assert [box.get("result") for box in boxes] == [["A"], ["B"], None, ["C"]]
    assert str(boxes[2]["error"]) == "cannot store bad"


def test_a_group_stops_at_its_item_limit_and_the_rest_commit_in_the_next() -> None:
    commit = HeldCommit()
    group: GroupCommit[str, str] = GroupCommit(commit, max_items=3)
    boxes, threads = submit_in_threads(group, ["a"], ["b", "c"], ["d"], ["e", "f", "g", "h"])
    commit.release.set()
    for thread in threads:
        thread.join(30)
    # a leader always takes at least its own items, even past the limit
    assert commit.calls == [["a"], ["b", "c", "d"], ["e", "f", "g", "h"]]
    assert boxes[3]["result"] == ["E", "F", "G", "H"]


def test_a_writer_alone_commits_at_once_and_its_error_is_its_own() -> None:
    group: GroupCommit[str, str] = GroupCommit(lambda items: [item * 2 for item in items])
    assert group.submit(["x", "y"]) == ["xx", "yy"]
    failing: GroupCommit[str, str] = GroupCommit(lambda items: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.submit(["x"])
    assert not failing._queue


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_posts_share_one_transaction_and_a_repeated_event_is_stored_once(make_app, backend, request):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    app = make_app(FEEDBACK_DATABASE_URL=url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    tokens = [register(app, message_id=f"m-{i}") for i in range(3)]
    engine = runtime(app).engine
    inserts: list[str] = []  # the statements storing events: one per transaction on the ingest path

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO feedback_events"):
            inserts.append(statement)

    sa_event.listen(engine, "before_cursor_execute", count)
    first = event("thumbs_up", tokens[0])
    retried = event("thumbs_down", tokens[1])  # sent twice at once, as a page's retry and its beacon may be
    other = event("copy_output", tokens[2], text="Open Settings")
    group = runtime(app)._ingest_group
    pause = PauseAt(engine, lambda statement, _: statement.startswith("INSERT INTO feedback_events"))

    def send(*evs: dict[str, Any]) -> dict[str, Any]:
        response = app.test_client().post("/feedback/events", json={"events": list(evs)})
        assert response.status_code == 200, response.json
        return response.json

    try:
        with in_thread(lambda: send(first)) as leading:
            assert pause.reached.wait(30)  # the first post is inside its transaction
            stored_before = len(inserts)
            with in_thread(lambda: send(retried)) as one, in_thread(lambda: send(retried, other)) as two:
                wait_until(lambda: len(group._queue) == 3, 30, "both posts to queue behind the first")
                pause.release.set()
    finally:
        pause.remove()
    assert leading["result"]["accepted"] == 1
    statuses = sorted([r["status"] for r in one["result"]["results"] + two["result"]["results"]])
    assert statuses == ["accepted", "accepted", "duplicate"]
    assert stored_before == 1 and len(inserts) == 2  # the first post's, then one for both others
    assert {row["event_id"] for row in stored_events(app)} == {first["id"], retried["id"], other["id"]}


def stored_events(app) -> list[dict[str, Any]]:
    with db.read(runtime(app).engine) as conn:
        return [dict(row) for row in conn.execute(events.select()).mappings()]
