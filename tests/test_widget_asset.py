"""How the blueprint serves the widget: the committed terser build of the source, classic and module forms, gzip,
ETag and 304, long caching under a versioned URL, the language files, and the size budget."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from feedback_bridge import widget_asset
from feedback_bridge.resources import resource_dir

BUDGET = 5_000  # bytes, gzip -9, as served, English included (issue 4)
REPO_WIDGET = Path(__file__).resolve().parent.parent / "widget"


@pytest.fixture
def client(make_app):
    return make_app().test_client()


WIDGET = resource_dir("widget")


def test_the_script_is_served_as_built_by_terser(client) -> None:
    response = client.get("/feedback/widget.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.data == (WIDGET / "feedback-widget.min.js").read_bytes()
    assert b"class FeedbackWidgetElement extends HTMLElement" not in response.data  # renamed: a real build


def test_the_committed_build_is_the_build_of_the_current_source(tmp_path) -> None:
    """The served file must come from the readable source as it is now: rebuilt here with the pinned terser."""
    npm = shutil.which("npm")
    assert npm, "npm (Node.js) is needed to check the widget's build: apt-get install nodejs npm"
    for name in ("package.json", "package-lock.json", "feedback-widget.js"):
        shutil.copy(REPO_WIDGET / name, tmp_path / name)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=tmp_path, check=True, timeout=300)
    subprocess.run([npm, "run", "--silent", "build"], cwd=tmp_path, check=True, timeout=120)
    built = (tmp_path / "feedback-widget.min.js").read_bytes()
    assert built == (REPO_WIDGET / "feedback-widget.min.js").read_bytes(), \
        "widget/feedback-widget.min.js is stale: run `npm run build` in widget/ and commit it"


def test_the_served_script_fits_the_size_budget(client) -> None:
    body = client.get("/feedback/widget.js").data
    assert len(gzip.compress(body, 9)) <= BUDGET


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
    source = (REPO_WIDGET / "feedback-widget.js").read_text(encoding="utf-8")
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
