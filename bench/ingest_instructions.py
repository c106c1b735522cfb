"""Instructions per request of ``POST /feedback/events`` and of ``/floor-stored``, counted by valgrind.

    PYTHONPATH=backend:bench python bench/ingest_instructions.py [--batch 20] [--requests 60] [--database-url URL]

Times on a shared 2-core machine move by 10% from one run to the next; the instructions a request executes repeat
to within about 2%, so small changes to the ingest path can be compared here before the HTTP benchmarks. Each
figure is the difference between two runs under cachegrind (``--cache-sim=no``: counting only) of the same
requests, one with ``--requests`` more of them, so start-up and the 100 warm-up requests cancel out. In process
(Flask's test client, as ``bench/ingest_inprocess.py``), with seeded event ids and hash seed; SQLite unless a
``--database-url`` is given (PostgreSQL's own work, in its server process, is not counted).

Needs valgrind (``apt-get install -y valgrind``); about a minute per figure.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile

PATHS = ("/floor-stored", "/feedback/events")
WARM_UP = 100


def send(path: str, batch: int, requests: int, database_url: str | None) -> None:
    """In the child: the warm-up, then ``requests`` requests of ``batch`` events to ``path``."""
    from ingest_inprocess import body, build_app

    app, tokens = build_app(database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")
    client, rng = app.test_client(), random.Random(7)
    for n in range(WARM_UP + requests):
        response = client.post(path, json=body(tokens, n, batch, new_id=lambda: f"{rng.getrandbits(128):032x}"))
        assert response.status_code == 200, response.get_data(as_text=True)
    app.extensions["feedback_bridge"].close()


def instructions(path: str, batch: int, requests: int, database_url: str | None) -> int:
    """Instructions of a child process sending the warm-up and ``requests`` requests."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--child", path, "--batch", str(batch), "--requests", str(requests)]
    if database_url:
        command += ["--database-url", database_url]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
                         check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    parser.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        send(args.child, args.batch, args.requests, args.database_url)
        return
    counts = {}
    for path in PATHS:
        more = instructions(path, args.batch, args.requests, args.database_url)
        fewer = instructions(path, args.batch, 0, args.database_url)
        counts[path] = (more - fewer) / args.requests
        print(f"{path:<18} batch {args.batch:>3}: {counts[path] / 1e6:7.2f} M instructions per request", flush=True)
    print(f"/feedback/events: {counts['/feedback/events'] / counts['/floor-stored']:.2f}x /floor-stored's")


if __name__ == "__main__":
    main()
