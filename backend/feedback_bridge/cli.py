"""``flask feedback ...``: run workers, inspect and repair the outbox, export and purge data."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from . import db, maintenance, outbox
from .models import DeliveryStatus
from .worker import Worker

if TYPE_CHECKING:
    from .extension import Runtime

logger = logging.getLogger(__name__)

# AppGroup pushes the app context for each command, under `flask` and under app.test_cli_runner() alike.
feedback_cli = AppGroup("feedback", help="feedback-bridge: delivery worker, outbox and data tools.")

STATUSES = [s.value for s in DeliveryStatus]
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _runtime() -> Runtime:
    return current_app.extensions["feedback_bridge"]


def _require_providers(runtime: Runtime) -> None:
    if not runtime.adapters:
        raise click.ClickException(
            "No providers are configured (FEEDBACK_PROVIDERS is empty): there is nothing to deliver to."
        )


# -- parameter types -------------------------------------------------------------------------------


class Duration(click.ParamType):
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value))
        if not match or int(match[1]) == 0:
            self.fail(f"{value!r} is not a duration like 90d, 12h, 30m (units: s m h d w).", param, ctx)
        return timedelta(**{_UNITS[match[2]]: int(match[1])})


class IsoDateTime(click.ParamType):
    """An ISO 8601 date or date-time; one without an offset is taken as UTC."""

    name = "iso-datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            text = str(value).strip()
            if text.endswith(("Z", "z")):  # fromisoformat() takes "Z" only from Python 3.11 on
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 date or date-time.", param, ctx)
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


# -- worker and deliver ----------------------------------------------------------------------------


class _StopRequested(BaseException):
    """Raised in the main thread by the SIGTERM/SIGINT handler."""


def _raise_stop(signum: int, _frame: Any) -> None:
    # Only raise here: a handler that takes locks (Event.set, pool shutdown) can deadlock the main thread.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise _StopRequested(signal.Signals(signum).name)


@feedback_cli.command("worker")
@click.option("--concurrency", type=click.IntRange(min=1), help="Deliveries in parallel [FEEDBACK_WORKER_CONCURRENCY].")
def worker_command(concurrency: int | None) -> None:
    """Run the delivery worker in the foreground until SIGTERM or SIGINT."""
    runtime = _runtime()
    _require_providers(runtime)
    settings = runtime.worker.settings
    if concurrency is not None:
        settings = replace(settings, concurrency=concurrency)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(runtime.engine, runtime.adapters, settings)
    run_worker(worker)


def run_worker(worker: Worker) -> None:
    """Run ``worker`` in a thread until SIGTERM or SIGINT (``KeyboardInterrupt`` off the main thread),
    then stop it, letting deliveries in flight finish."""
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run_forever()
        except BaseException as exc:
            crashed.append(exc)
            logger.exception("The delivery worker crashed")

    thread = threading.Thread(target=run, name="feedback-worker")
    click.echo(f"feedback-bridge worker {worker.owner}: delivering to {', '.join(sorted(worker.adapters))} "
               f"with concurrency {worker.settings.concurrency}. Stop with SIGTERM or Ctrl-C.", err=True)
    previous: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, _raise_stop)
        thread.start()
        thread.join()
    except (_StopRequested, KeyboardInterrupt) as exc:
        click.echo(f"Stopping on {exc or 'interrupt'}: finishing deliveries in flight...", err=True)
    finally:
        worker.stop()
        if thread.ident is not None:
            thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if crashed:
        raise click.ClickException(f"The worker stopped: {type(crashed[0]).__name__}: {crashed[0]}")
    click.echo("Worker stopped.", err=True)


@feedback_cli.command("deliver")
@click.option("--once", is_flag=True, help="Deliver everything due now, then exit.")
def deliver_command(once: bool) -> None:
    """Deliver everything that is due now, then print the outbox status."""
    if not once:
        raise click.UsageError("Give --once; for a long-running process use `flask feedback worker`.")
    runtime = _runtime()
    _require_providers(runtime)
    processed = runtime.worker.drain(runtime.now())
    click.echo(f"Processed {processed} {'delivery' if processed == 1 else 'deliveries'}.")
    _print_status(_status(runtime))


# -- status and retry ------------------------------------------------------------------------------


def _status(runtime: Runtime) -> dict[str, dict[str, Any]]:
    now = runtime.now()
    with db.read(runtime.engine) as conn:
        counts = outbox.counts(conn)
        oldest = maintenance.oldest_pending(conn)
    result: dict[str, dict[str, Any]] = {}
    for provider in sorted(set(runtime.adapters) | set(counts)):
        since = oldest.get(provider)
        result[provider] = {
            "configured": provider in runtime.adapters,
            "counts": counts.get(provider, dict.fromkeys(STATUSES, 0)),
            "oldest_pending_age_seconds": round((now - since).total_seconds(), 3) if since else None,
        }
    return result


def _print_status(status: dict[str, dict[str, Any]]) -> None:
    if not status:
        click.echo("No providers configured and no deliveries recorded.")
        return
    header = ["provider", *STATUSES, "oldest pending"]
    rows = [
        [name + ("" if info["configured"] else " (not configured)"), *(str(info["counts"][s]) for s in STATUSES),
         _age(info["oldest_pending_age_seconds"])]
        for name, info in status.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        click.echo("  ".join(cells))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // sub_size:02d}{sub}"
    return f"{seconds}s"


@feedback_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(as_json: bool) -> None:
    """Deliveries per provider and status, and the age of the oldest unfinished delivery."""
    status = _status(_runtime())
    if as_json:
        click.echo(json.dumps({"providers": status}, indent=2))
    else:
        _print_status(status)


@feedback_cli.command("retry")
@click.option("--provider", help="Only dead letters of this provider.")
@click.option("--id", "ids", type=int, multiple=True, help="Only this outbox row (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of every provider.")
def retry_command(provider: str | None, ids: tuple[int, ...], all_: bool) -> None:
    """Put failed deliveries (dead letters) back to pending with a fresh attempt budget."""
    if all_ and (provider or ids):
        raise click.UsageError("--all retries every dead letter; do not combine it with --provider or --id.")
    if not (all_ or provider or ids):
        raise click.UsageError("Say which dead letters to retry: --provider NAME, --id N, or --all.")
    runtime = _runtime()
    if provider and provider not in runtime.adapters:
        click.echo(f"Warning: provider {provider!r} is not configured here; its rows stay pending.", err=True)
    with db.write(runtime.engine) as conn:
        n, stale = outbox.retry_failed(conn, runtime.now(), provider=provider, ids=list(ids) or None)
    click.echo(f"Moved {n} failed {'delivery' if n == 1 else 'deliveries'} back to pending.")
    if stale:
        click.echo(f"Skipped {stale} stale {'vote' if stale == 1 else 'votes'}: a later vote was delivered "
                   "since, and sending the old one after it would undo it.")


# -- export ----------------------------------------------------------------------------------------


@feedback_cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, allow_dash=True), default="-",
              help="File to write; '-' (default) is stdout.")
@click.option("--since", type=IsoDateTime(), help="Only events received at or after this time.")
@click.option("--until", type=IsoDateTime(), help="Only events received before this time.")
@click.option("--user", "user_id", help="Only events of this user id.")
def export_command(fmt: str, output: str, since: datetime | None, until: datetime | None,
                   user_id: str | None) -> None:
    """Export events with their delivery outcomes, oldest first."""
    runtime = _runtime()
    filters = maintenance.ExportFilter(since=since, until=until, user_id=user_id)
    rows = maintenance.iter_export(runtime.engine, filters)
    to_file = output != "-"
    with click.open_file(output, "w", encoding="utf-8", atomic=to_file) as stream:
        if not to_file:
            maintenance.write_export(stream, fmt, rows)
            return
        total = maintenance.count_events(runtime.engine, filters)
        with click.progressbar(length=total, label="Exporting events",
                               file=sys.stderr) as bar:
            maintenance.write_export(stream, fmt, _counting(rows, bar))
    click.echo(f"Wrote {bar.pos} events to {output}.", err=True)


def _counting(rows: Iterable[dict[str, Any]], bar: Any) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield row
        bar.update(1)




# -- purge -----------------------------------------------------------------------------------------


@feedback_cli.command("purge")
@click.option("--older-than", type=Duration(), help="Retention: delete what was received longer ago (90d, 12h, 30m).")
@click.option("--user", "user_id", help="Erasure: delete everything of this user id.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_command(older_than: timedelta | None, user_id: str | None, yes: bool) -> None:
    """Delete old feedback (retention) or all feedback of one user (erasure)."""
    if (older_than is None) == (user_id is None):
        raise click.UsageError("Give exactly one of --older-than DURATION or --user USER_ID.")
    runtime = _runtime()
    if older_than is None:
        if not yes:
            click.confirm(f"Delete every message, event, state and delivery of user {user_id!r}?", abort=True)
        report = maintenance.purge_user(runtime.engine, user_id or "")
    else:
        cutoff = runtime.now() - older_than
        if not yes:
            n = maintenance.count_older_than(runtime.engine, cutoff)
            click.confirm(f"Delete {n} events received before {cutoff.isoformat(timespec='seconds')} with their "
                          "deliveries, and the messages older than that with no events left?", abort=True)
        report = maintenance.purge_older_than(runtime.engine, cutoff)
    click.echo("Deleted: " + ", ".join(f"{table} {n}" for table, n in report.items()))
