"""``feedback-bridge demo`` (or ``python -m feedback_bridge demo``): run the bundled demo app."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedback-bridge", description="feedback-bridge: feedback on AI chat answers, delivered to providers."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run the demo app (a help desk transcript with feedback widgets)",
        description="Run the demo app with Werkzeug's development server. Not for production use.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    demo.add_argument("--port", type=int, default=5000, help="port to listen on (default: %(default)s)")
    demo.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="folder for the demo's SQLite database (default: ~/.local/share/feedback-bridge)",
    )
    demo.add_argument(
        "--providers", choices=["emulators", "log"], default="emulators",
        help="deliver to the four provider emulators run in-process (default), or only log deliveries",
    )
    return parser


def run_demo(host: str, port: int, data_dir: Path | None, providers: str = "emulators") -> int:
    from .demo import create_app, shutdown

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(data_dir=data_dir, providers=providers)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"feedback-bridge demo: http://{shown_host}:{port}/  (Ctrl+C to stop)", flush=True)
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False, debug=False)
    finally:
        shutdown(app)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args.host, args.port, args.data_dir, args.providers)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse only lets known commands through


if __name__ == "__main__":
    sys.exit(main())
