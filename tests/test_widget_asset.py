"""How the blueprint serves the widget: minified (rjsmin), classic and module forms, gzip, ETag and 304, long caching
under a versioned URL, the language files, and the size budget."""

from __future__ import annotations

import gzip
import json

import pytest
import rjsmin

from feedback_bridge import widget_asset
from feedback_bridge.resources import resource_dir

BUDGET = 5_000  # bytes, gzip -9, as served, English included (issue 4)


@pytest.fixture
def client(make_app):
    return make_app().test_client()


def test_the_script_is_served_minified_from_the_readable_source(client) -> None:
    response = client.get("/feedback/widget.js")
    source = (resource_dir("widget") / "feedback-widget.js").read_text(encoding="utf-8")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.data.decode() == rjsmin.jsmin(source)
    assert len(response.data) < len(source.encode()) * 0.7
    assert "class FeedbackWidgetElement extends HTMLElement" in response.data.decode()


@pytest.mark.xfail(strict=True, reason="issue 4's 5,000 B budget is not met yet: see CHANGES.md and bench/widget.py")
def test_the_served_script_fits_the_size_budget(client) -> None:
    body = client.get("/feedback/widget.js").data
    assert len(gzip.compress(body, 9)) <= BUDGET


def test_the_size_stays_where_it_was_measured(client) -> None:
    """A guard against growth while the budget is not met (the number in CHANGES.md)."""
    body = client.get("/feedback/widget.js").data
    assert len(gzip.compress(body, 9)) <= 5_600  # 5,576 B measured


def test_gzip_etag_and_revalidation(client) -> None:
    plain = client.get("/feedback/widget.js")
    zipped = client.get("/feedback/widget.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped.data) == plain.data
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert plain.headers["ETag"] != zipped.headers["ETag"]  # two representations, two strong ETags
    again = client.get("/feedback/widget.js", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.get("/feedback/widget.js", headers={"If-None-Match": '"old"'}).status_code == 200


def test_a_versioned_url_is_cached_for_a_year(make_app) -> None:
    app = make_app()
    with app.test_request_context():
        url = widget_asset.widget_url()
    client = app.test_client()
    versioned = client.get(url)
    assert "v=" in url and versioned.status_code == 200
    assert versioned.cache_control.max_age == 365 * 24 * 3600 and versioned.cache_control.immutable
    unversioned = client.get("/feedback/widget.js")
    stale = client.get("/feedback/widget.js?v=0ld")
    for response in (unversioned, stale):
        assert response.cache_control.max_age == 3600 and not response.cache_control.immutable
    with app.test_request_context():
        assert app.jinja_env.globals["feedback_widget_url"]() == url


def test_the_module_form_exports_the_element(client) -> None:
    module = client.get("/feedback/widget.mjs")
    same = client.get("/feedback/widget.js?module")
    assert module.status_code == 200 and module.mimetype == "text/javascript" and module.data == same.data
    code = module.data.decode()
    assert "import.meta.url" in code and "currentScript" not in code
    assert code.rstrip().endswith("export const{FeedbackWidgetElement,feedbackBridge}=window;")


@pytest.mark.parametrize("lang", ["de", "fr", "es", "ja"])
def test_each_language_file_is_served_and_complete(client, lang: str) -> None:
    response = client.get(f"/feedback/widget/i18n/{lang}.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    labels = response.get_json()
    assert labels == json.loads((resource_dir("widget") / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    source = (resource_dir("widget") / "feedback-widget.js").read_text(encoding="utf-8")
    reasons = {"NOT_FACTUALLY_CORRECT", "HARMFUL_OR_UNSAFE", "INCORRECT_OR_MISSING_SOURCES", "NOT_HELPFUL",
               "FACTUALLY_CORRECT", "COMPLETE", "RELEVANT_SOURCES", "HELPFUL", "NOT_BASED_ON_DOCUMENTS",
               "NOT_COMPLETE", "NOT_CONCISE", "OTHER"}
    assert reasons <= labels.keys()
    for english in set(labels) - reasons:  # every English key is a label the widget uses
        assert f"'{english}'" in source or f'"{english}"' in source or f"={english}>" in source, english
        assert labels[english].strip()


def test_unknown_languages_are_404(client) -> None:
    assert client.get("/feedback/widget/i18n/xx.json").status_code == 404
    assert client.get("/feedback/widget/i18n/..%2Fpyproject.json").status_code == 404
