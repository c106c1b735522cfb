"""The feedback dashboard at ``{prefix}/dashboard``: registered only when an admin check is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from .access import enabled, localhost_only

if TYPE_CHECKING:
    from ..extension import Runtime

__all__ = ["localhost_only", "register_dashboard"]


def register_dashboard(app: Flask, runtime: Runtime) -> bool:
    """Register the dashboard's blueprint if ``FEEDBACK_DASHBOARD_CHECK`` or ``FEEDBACK_DASHBOARD_USERS`` is set;
    without either there is no route at all (404)."""
    if not enabled(runtime.settings):
        return False
    from .views import create_dashboard_blueprint

    app.register_blueprint(create_dashboard_blueprint(runtime))
    return True
