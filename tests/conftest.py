from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feedback_bridge import FeedbackBridge
from feedback_bridge.extension import Runtime
from feedback_bridge.schema import metadata

PG_ENV = "FEEDBACK_TEST_DATABASE_URL"
# CI sets this: a skipped test there is a suite that did not run, and fails the run.
REQUIRE_ALL = bool(os.environ.get("FEEDBACK_REQUIRE_ALL_SUITES"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if REQUIRE_ALL and skipped and session.exitstatus == 0:
        reporter.write_line(f"FEEDBACK_REQUIRE_ALL_SUITES is set and {skipped} tests were skipped", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    """A private PostgreSQL database for this test session, created on the server named by
    FEEDBACK_TEST_DATABASE_URL and dropped afterwards (so parallel runs never share tables)."""
    base = os.environ.get(PG_ENV)
    if not base:
        yield None
        return
    url = make_url(base)
    name = f"feedback_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_server_url: str | None) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    if pg_server_url is None:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests need a server (CI sets it)")
    engine = create_engine(pg_server_url)
    metadata.drop_all(engine)
    engine.dispose()
    return pg_server_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Runs a test against a fresh SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'feedback.sqlite3'}"


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path, sqlite_url) -> Iterator[AppFactory]:
    """``make_app(**config)``: a Flask app with the extension, no worker thread, no settle window,
    a SQLite file store, and config overrides on top. Runtimes are closed after the test."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = Flask(f"test_app_{len(apps)}", instance_path=str(tmp_path / f"instance{len(apps)}"))
        app.config.update(
            SECRET_KEY="test-secret", FEEDBACK_WORKER=False, FEEDBACK_SETTLE_SECONDS=0,
            FEEDBACK_DATABASE_URL=sqlite_url, FEEDBACK_PROVIDERS={},
        )
        app.config.update(config)
        FeedbackBridge(app)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["feedback_bridge"].close()


def runtime(app: Flask) -> Runtime:
    return app.extensions["feedback_bridge"]


def register(app: Flask, message_id: str = "m-1", user_id: str = "alice@example.com", **kwargs: Any) -> str:
    """Register a message (conversation "c-1" unless given) and return its token."""
    bridge = FeedbackBridge()
    kwargs.setdefault("conversation_id", "c-1")
    kwargs.setdefault("input", "How do I reset my password?")
    kwargs.setdefault("output", "Open Settings, then Security, then Reset password.")
    with app.app_context():
        return bridge.register_message(message_id=message_id, user_id=user_id, **kwargs)
