"""``feedback-bridge demo`` (or ``python -m feedback_bridge demo``): run the bundled demo app."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .exceptions import ConfigurationError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedback-bridge", description="feedback-bridge: feedback on AI chat answers, delivered to providers."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run the demo app (a help desk chat with feedback widgets)",
        description="Run the demo app with Werkzeug's development server. Not for production use.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    demo.add_argument("--port", type=int, default=5000, help="port to listen on (default: %(default)s)")
    demo.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="folder for the demo's SQLite database (default: ~/.local/share/feedback-bridge)",
    )
    demo.add_argument(
        "--providers", choices=["emulators", "real", "log"], default="emulators",
        help="emulators: deliver to the four provider emulators run in-process (default, no cloud account); "
             "real: deliver to the providers of the FEEDBACK_PROVIDERS environment variable (JSON, as in the "
             "README), giving every answer the provider ids of FEEDBACK_DEMO_REFS (JSON: a real message's ids "
             "per provider) or none, so providers that need ids record 'skipped' with the reason; "
             "log: only log deliveries",
    )
    demo.add_argument(
        "--seed", type=_positive_int, default=None, metavar="N",
        help="first fill the store with N realistic feedback events over the past weeks, for the dashboard",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not 1 or more")
    return number


def run_demo(host: str, port: int, data_dir: Path | None, providers: str = "emulators",
             seed: int | None = None) -> int:
    from .demo import create_app, shutdown
    from .demo import seed as seed_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(data_dir=data_dir, providers=providers)
    if seed:
        try:
            added = seed_demo(app, seed)
        except BaseException:
            shutdown(app)
            raise
        print(f"feedback-bridge demo: added {added} seeded events", flush=True)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"feedback-bridge demo: http://{shown_host}:{port}/  (Ctrl+C to stop)", flush=True)
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False, debug=False)
    finally:
        shutdown(app)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            return run_demo(args.host, args.port, args.data_dir, args.providers, args.seed)
        except ConfigurationError as exc:  # a setting to fix, not a bug: no traceback
            parser.exit(2, f"feedback-bridge demo: error: {exc}\n")
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse only lets known commands through


if __name__ == "__main__":
    sys.exit(main())
