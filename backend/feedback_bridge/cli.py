"""``flask feedback ...``: run workers, inspect and repair the outbox, export and purge data."""

from __future__ import annotations

import click

feedback_cli = click.Group("feedback", help="feedback-bridge: delivery worker, outbox and data tools.")
