"""The dashboard's routes: overview, feedback list, export, and the retry of dead letters (the only POST)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .. import db, maintenance, outbox
from ..api import error
from ..cli import _age
from ..models import REASONS
from ..providers.mapping import REASON_LABELS
from ..resources import resource_dir
from . import access, charts, filters, queries

if TYPE_CHECKING:
    from ..extension import Runtime

logger = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What the list keeps in its links (filters), and what a link to the next page adds.
RETRY_COUNTS = ("retried", "stale")  # query parameters the retry's redirect adds for its notice
FILTER_KEYS = ("days", "since", "until", "vote", "rating", "reason", "provider", "status", "user", "conversation")


def create_dashboard_blueprint(runtime: Runtime) -> Blueprint:
    settings = runtime.settings
    bp = Blueprint("feedback_dashboard", __name__, url_prefix=f"{settings.url_prefix}/dashboard",
                   template_folder=str(resource_dir("templates")))

    @bp.before_request
    def _authorise() -> Response | None:
        try:
            g.dashboard_admin = access.admin_identity(settings, request)
        except access.Denied as denied:
            return _denied(denied)
        g.dashboard_nonce = request.cookies.get(access.CSRF_COOKIE) or access.new_nonce()
        return None

    @bp.after_request
    def _secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        nonce = g.get("dashboard_nonce")
        if nonce and request.cookies.get(access.CSRF_COOKIE) != nonce:
            response.set_cookie(access.CSRF_COOKIE, nonce, httponly=True, samesite="Strict",
                                secure=request.is_secure, path=bp.url_prefix)
        return response

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = Response(render_template("feedback_bridge/dashboard/error.html", status=exc.code,
                                            message=exc.description), exc.code)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @bp.get("/")
    def overview() -> Response | str:
        params = _params()
        days = params.get("days", filters.DEFAULT_WINDOW)
        if days not in filters.WINDOWS:  # a count per day: the overview keeps to the windows it offers
            return error(400, {"days": [f"One of {', '.join(map(str, filters.WINDOWS))}."]})
        now = runtime.now()
        data = queries.overview(runtime.engine, now - timedelta(days=days), now)
        return render_template("feedback_bridge/dashboard/overview.html", data=data, days=days,
                               windows=filters.WINDOWS, charts=_overview_charts(data), now=now,
                               csrf_token=_csrf_token(), **_retried(), **_common())

    @bp.get("/feedback")
    def feedback_list() -> Response | str:
        params = _params()
        page = queries.list_page(runtime.engine, filters.export_filter(params, runtime.now()),
                                 before=params.get("before"))
        kept = {key: request.args[key] for key in FILTER_KEYS if request.args.get(key, "").strip()}
        return render_template(
            "feedback_bridge/dashboard/list.html", page=page, args=kept, providers=_providers(),
            next_url=url_for(".feedback_list", **kept, before=page.next_cursor) if page.next_cursor else None,
            export_query=urlencode(kept), csrf_token=_csrf_token(), **_retried(), **_common(),
        )

    @bp.get("/export")
    def export() -> Response:
        params = _params()
        fmt = params.get("format", "csv")
        rows = maintenance.iter_export(runtime.engine, filters.export_filter(params, runtime.now()))
        stamp = runtime.now().strftime("%Y%m%dT%H%M%SZ")
        return Response(
            stream_with_context(maintenance.export_lines(fmt, rows)),
            mimetype="text/csv" if fmt == "csv" else "application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="feedback-{stamp}.{fmt}"'},
        )

    @bp.post("/deliveries/retry")
    def retry() -> Response:
        """Dead letters back to pending: one (``id``) or all of a provider (``provider``), as
        ``flask feedback retry`` does."""
        if not access.same_origin(request):
            return _denied(access.Denied(403, "Cross-site request refused."))
        secret = current_app.config.get("SECRET_KEY")
        if not secret:
            return _denied(access.Denied(403, "Retrying needs the app's SECRET_KEY (it signs the form)."))
        if not access.csrf_valid(secret, current_app.config.get("SECRET_KEY_FALLBACKS") or (),
                                 request.form.get("csrf_token"), g.dashboard_admin,
                                 request.cookies.get(access.CSRF_COOKIE)):
            return _denied(access.Denied(403, "The form expired or was not made by this dashboard; reload the "
                                              "page and try again."))
        ids, provider = request.form.get("id", ""), request.form.get("provider", "").strip()
        if bool(ids) == bool(provider) or (ids and not ids.isdigit()):
            return error(400, {"id": ["Give either the id of a delivery or a provider."]})
        with db.write(runtime.engine) as conn:
            moved, stale = outbox.retry_failed(conn, runtime.now(), provider=provider or None,
                                               ids=[int(ids)] if ids else None)
        logger.info("Dashboard user %r moved %d dead letters back to pending, skipped %d stale ones (%s)",
                    g.dashboard_admin, moved, stale, f"delivery {ids}" if ids else f"provider {provider}")
        runtime.worker.wake()
        return redirect(_back(request.form.get("next"), moved, stale), 303)

    def _params() -> dict[str, Any]:
        try:
            return filters.parse(request.args)
        except ValidationError as exc:
            raise _BadQuery(exc.messages) from None

    @bp.errorhandler(_BadQuery)
    def _bad_query(exc: _BadQuery) -> Response:
        return error(400, exc.messages)

    def _csrf_token() -> str | None:
        secret = current_app.config.get("SECRET_KEY")
        if not secret:
            return None
        return access.csrf_token(secret, current_app.config.get("SECRET_KEY_FALLBACKS") or (), g.dashboard_admin,
                                 g.dashboard_nonce)

    def _providers() -> list[str]:
        return sorted(set(runtime.adapters) | set(queries.providers(runtime.engine)))

    def _back(target: str | None, moved: int, stale: int) -> str:
        """Where the form came from, if that is a dashboard page (never an open redirect), with the counts."""
        parts = urlsplit(target or "")
        if parts.scheme or parts.netloc or not parts.path.startswith(f"{bp.url_prefix}/"):
            parts = urlsplit(url_for(".feedback_list"))
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in RETRY_COUNTS] + [("retried", str(moved))]
        if stale:
            query.append(("stale", str(stale)))
        return f"{parts.path}?{urlencode(query)}"

    def _retried() -> dict[str, str]:
        """The counts of the retry that redirected here, for its notice."""
        return {key: request.args.get(key, "") for key in RETRY_COUNTS}

    return bp


class _BadQuery(Exception):
    def __init__(self, messages: Any) -> None:
        super().__init__("bad query string")
        self.messages = messages


def _denied(denied: access.Denied) -> Response:
    response = Response(render_template("feedback_bridge/dashboard/error.html", status=denied.status,
                                        message=str(denied)), denied.status)
    if denied.status == 401:
        response.headers["WWW-Authenticate"] = f'Basic realm="{access.REALM}", charset="UTF-8"'
    return response


def _common() -> dict[str, Any]:
    return {"reasons": REASONS, "reason_labels": REASON_LABELS, "statuses": queries.STATUSES, "age": _age,
            "finished": queries.FINISHED,
            "pretty": _pretty}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _overview_charts(data: queries.Overview) -> dict[str, Any]:
    every = max(1, len(data.days) // 10)
    labels = [day.day.strftime("%b %d") for day in data.days]
    return {
        "volume": charts.bar_chart(list(zip(labels, [d.total for d in data.days], strict=True)),
                                   title="Feedback events per day", label_every=every),
        "share": charts.line_chart(list(zip(labels, [d.up_share for d in data.days], strict=True)),
                                   title="Thumbs-up share of thumbs per day", maximum=100, unit="%",
                                   label_every=every),
        "ratings": charts.bar_chart([(f"{n} ★", count) for n, count in data.ratings.items()],
                                    title="Ratings given, 1 to 5 stars"),
        "reasons": charts.hbar_chart([(REASON_LABELS.get(r, r), n) for r, n in data.reasons[:8]],
                                     title="Most given reasons"),
        "health": {name: charts.stacked_bar(list(h.counts.items()), title=f"Deliveries to {name} by status")
                   for name, h in data.health.items()},
    }
