"""How long a request holds SQLite's write lock: ``POST /feedback/events`` against ``/floor-stored``.

    PYTHONPATH=backend:bench python bench/ingest_lock.py [--batch 20] [--requests 150] [--rounds 6]

On SQLite one writer at a time holds the lock, so under concurrent load a batch's rate is bounded by how long
each request holds it as much as by the CPU it costs. In process (Flask's test client, as
``bench/ingest_inprocess.py``), one thread, so no request waits for another: the time from the bridge's write gate
being taken (``feedback_bridge.write_gate``, just before ``BEGIN IMMEDIATE``) to its release after ``COMMIT``, and
the whole request's time. The endpoints take turns, ``--requests`` each per round, on one growing store; medians
of each round's median, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ingest_inprocess import body, build_app

from feedback_bridge import write_gate

PATHS = ("/floor-stored", "/feedback/events")


def timed_gate(holds: list[int]) -> None:
    """Make every write gate record, in ``holds``, the nanoseconds it is held."""
    hold = write_gate.WriteGate.hold

    @contextmanager
    def recording(gate: write_gate.WriteGate) -> Iterator[None]:
        with hold(gate):
            start = time.perf_counter_ns()
            try:
                yield
            finally:
                holds.append(time.perf_counter_ns() - start)

    write_gate.WriteGate.hold = recording  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--requests", type=int, default=150, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    holds: list[int] = []
    timed_gate(holds)
    app, tokens = build_app(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")
    client = app.test_client()
    medians: dict[str, tuple[list[float], list[float]]] = {path: ([], []) for path in PATHS}
    sent = 0
    for _ in range(args.rounds):
        for path in PATHS:
            holds.clear()
            times = []
            for _ in range(args.requests):
                request_body = body(tokens, sent, args.batch)
                sent += 1
                start = time.perf_counter_ns()
                response = client.post(path, json=request_body)
                times.append(time.perf_counter_ns() - start)
                assert response.status_code == 200, response.get_data(as_text=True)
            assert len(holds) == args.requests, f"{path}: {len(holds)} write transactions for {args.requests} requests"
            medians[path][0].append(statistics.median(holds) / 1000)
            medians[path][1].append(statistics.median(times) / 1000)
    print(f"SQLite, batches of {args.batch}, {args.rounds} rounds of {args.requests} requests per endpoint")
    print(f"{'endpoint':<18}{'lock held us':>14}{'request us':>12}")
    for path, (held, took) in medians.items():
        print(f"{path:<18}{statistics.median(held):>14.0f}{statistics.median(took):>12.0f}")
    ratios = [e / f for e, f in zip(medians["/feedback/events"][0], medians["/floor-stored"][0], strict=True)]
    print(f"/feedback/events holds the lock {statistics.median(ratios):.2f}x as long as /floor-stored "
          f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
