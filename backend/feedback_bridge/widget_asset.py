"""The widget as the blueprint serves it: the build of ``widget/feedback-widget.js`` by terser
(``widget/feedback-widget.min.js``, committed; ``npm run build`` in ``widget/`` remakes it), in a classic and a
module form, gzip-compressed when the client accepts it, with a strong ETag, and cacheable for a year under a
versioned URL.

- ``{prefix}/widget.js`` - the classic script (``<script src=... defer>``), auto-attaching from its data-* attributes.
- ``{prefix}/widget.mjs`` (also ``widget.js?module``) - the same code as an ES module exporting
  ``FeedbackWidgetElement`` and ``feedbackBridge``.
- ``{prefix}/widget/i18n/<lang>.json`` - the labels of one language, which the widget fetches when a page needs it.

``widget_url()`` (also the Jinja global ``feedback_widget_url``) gives ``{prefix}/widget.js?v=<hash>``: with the
current hash the response may be cached for a year (``immutable``); without it, or with an old one, for an hour.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from flask import Response, abort, request, url_for

from .resources import resource_dir

if TYPE_CHECKING:
    from flask import Blueprint

BUILT = "feedback-widget.min.js"  # terser's build of feedback-widget.js
# The module form: the classic script reads its own URL (its endpoint is next to it) and data-* settings from
# document.currentScript, which modules lack: there the widget's one `document.currentScript` (`x.currentScript` once
# minified) becomes the module's URL.
CURRENT_SCRIPT = re.compile(r"[\w$]+\.currentScript\b")
MODULE_SCRIPT = "{src:import.meta.url}"
MODULE_EXPORTS = "\nexport const{FeedbackWidgetElement,feedbackBridge}=window;\n"
LANG = re.compile(r"^[a-z]{2}$")
SHORT_MAX_AGE = 3600
LONG_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str  # of the identity body; the gzip representation's is etag + "-gz"
    mimetype: str

    @classmethod
    def of(cls, body: bytes, mimetype: str) -> Asset:
        return cls(body, gzip.compress(body, 9, mtime=0), hashlib.sha256(body).hexdigest()[:20], mimetype)


@cache
def minified() -> str:
    """The widget as built by terser (read once per process)."""
    return (resource_dir("widget") / BUILT).read_text(encoding="utf-8")


@cache
def script(module: bool = False) -> Asset:
    code = minified()
    if module:
        code, found = CURRENT_SCRIPT.subn(MODULE_SCRIPT, code)
        if found != 1:
            raise RuntimeError("the widget must read document.currentScript exactly once for its module form")
        code += MODULE_EXPORTS
    return Asset.of(code.encode(), "text/javascript")


@cache
def labels(lang: str) -> Asset | None:
    path = resource_dir("widget") / "i18n" / f"{lang}.json"
    if not path.is_file():
        return None
    body = json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False, separators=(",", ":"))
    return Asset.of(body.encode(), "application/json")


def version() -> str:
    """The hash of the served script, for ``widget.js?v=...`` URLs."""
    return script().etag[:12]


def widget_url(**values: str) -> str:
    return url_for("feedback_bridge.widget", v=version(), **values)


def respond(asset: Asset, versioned: bool = False) -> Response:
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    etag = asset.etag + ("-gz" if gzipped else "")
    response = Response(asset.gzipped if gzipped else asset.body, mimetype=asset.mimetype)
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = LONG_MAX_AGE if versioned else SHORT_MAX_AGE
    if versioned:
        response.cache_control.immutable = True
    return response.make_conditional(request)


def add_routes(bp: Blueprint) -> None:
    @bp.get("/widget.js")
    def widget() -> Response:
        return respond(script("module" in request.args), request.args.get("v") == version())

    @bp.get("/widget.mjs")
    def widget_module() -> Response:
        return respond(script(True), request.args.get("v") == version())

    @bp.get("/widget/i18n/<lang>.json")
    def widget_labels(lang: str) -> Response:
        asset = labels(lang) if LANG.match(lang) else None
        if asset is None:
            abort(404)
        return respond(asset)

    bp.add_app_template_global(widget_url, "feedback_widget_url")
