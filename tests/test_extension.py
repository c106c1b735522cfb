"""The Flask extension: both init patterns, several apps, configuration precedence and validation, errors,
the lazily started worker and the library logger."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from conftest import register, runtime
from feedback_bridge import ConfigurationError, FeedbackBridge, NotInitializedError
from feedback_bridge.config import DEFAULTS
from feedback_bridge.extension import Runtime
from feedback_bridge.providers import ADAPTERS
from feedback_bridge.schema import events, messages
from support import RecordingAdapter, event

NewApp = Callable[..., Flask]


@pytest.fixture
def new_app(tmp_path, monkeypatch) -> Iterator[NewApp]:
    """``new_app(**config)``: a bare Flask app (no extension yet) in a clean ``FEEDBACK_*`` environment."""
    for key in list(os.environ):
        if key.startswith("FEEDBACK_"):
            monkeypatch.delenv(key)
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = Flask(f"ext_app_{len(apps)}", instance_path=str(tmp_path / f"instance-{len(apps)}"))
        app.config.update(SECRET_KEY="s3cret", FEEDBACK_WORKER=False)
        app.config.update(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        if "feedback_bridge" in app.extensions:
            app.extensions["feedback_bridge"].close()


def sqlite_url(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def count(app: Flask, table) -> int:
    with runtime(app).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


# -- both init patterns ------------------------------------------------------------------------------


def test_constructor_with_app(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    bridge = FeedbackBridge(app)
    assert isinstance(app.extensions["feedback_bridge"], Runtime)
    assert app.test_client().get("/feedback/health").status_code == 200
    with app.app_context():
        token = bridge.register_message(conversation_id="c", message_id="m", user_id="u")
    response = app.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token)]})
    assert response.status_code == 200
    with app.app_context():
        assert bridge.get_state(token).vote == "up"


def test_factory_pattern_with_init_app(new_app, tmp_path) -> None:
    bridge = FeedbackBridge()
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    assert "feedback_bridge" not in app.extensions
    bridge.init_app(app)
    assert isinstance(app.extensions["feedback_bridge"], Runtime)
    with app.app_context():
        token = bridge.register_message(conversation_id="c", message_id="m", user_id="u")
    assert app.test_client().get("/feedback/state", query_string={"token": token}).status_code == 200


def test_one_bridge_serves_two_apps_with_separate_databases(new_app, tmp_path) -> None:
    bridge = FeedbackBridge()
    one = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "one.sqlite3"))
    two = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "two.sqlite3"))
    bridge.init_app(one)
    bridge.init_app(two)
    assert runtime(one) is not runtime(two)
    assert runtime(one).engine.url != runtime(two).engine.url
    with one.app_context():
        token_one = bridge.register_message(conversation_id="c", message_id="in-one", user_id="u")
    with two.app_context():
        # Same secret, same row id 1, another message: the token of app one means nothing here.
        token_two = bridge.register_message(conversation_id="c", message_id="in-two", user_id="u")
        assert runtime(two).store.find_message("c", "in-one") is None
    assert runtime(one).store.find_message("c", "in-one").pk == runtime(two).store.find_message("c", "in-two").pk
    assert one.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token_one)]}) \
        .status_code == 200
    crossed = two.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token_one)]})
    assert crossed.status_code == 422
    assert crossed.get_json()["results"][0]["code"] == "message_unknown"
    assert count(one, events) == 1
    assert count(two, events) == 0
    assert two.test_client().get("/feedback/state", query_string={"token": token_two}).get_json()["vote"] is None


def test_the_bridge_never_keeps_the_app(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    bridge = FeedbackBridge(app, settle_seconds=1)
    assert not hasattr(bridge, "app")
    assert not any(isinstance(value, Flask) for value in vars(bridge).values())
    assert bridge.options == {"settle_seconds": 1}


def test_an_app_is_collectable_once_dropped(tmp_path, monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith("FEEDBACK_"):
            monkeypatch.delenv(key)
    bridge = FeedbackBridge()
    app = Flask("collectable", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="s", FEEDBACK_WORKER=False, FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "c.db"))
    bridge.init_app(app)
    runtime(app).close()
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None


# -- configuration -----------------------------------------------------------------------------------


def test_defaults_fill_only_what_the_app_did_not_set(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), FEEDBACK_MAX_ATTEMPTS=3,
                  FEEDBACK_SETTLE_SECONDS=0.5)
    FeedbackBridge(app, max_attempts=7)
    assert app.config["FEEDBACK_MAX_ATTEMPTS"] == 3
    assert app.config["FEEDBACK_SETTLE_SECONDS"] == 0.5
    for key, default in DEFAULTS.items():
        if key not in ("MAX_ATTEMPTS", "SETTLE_SECONDS", "DATABASE_URL", "WORKER"):
            assert app.config[f"FEEDBACK_{key}"] == default, key
    settings = runtime(app).settings
    assert settings.max_attempts == 3
    assert settings.settle_seconds == 0.5
    assert settings.token_max_age == DEFAULTS["TOKEN_MAX_AGE"]


@pytest.mark.parametrize(("config", "env", "options", "expected"), [
    ({}, None, {}, DEFAULTS["TOKEN_MAX_AGE"]),
    ({}, None, {"token_max_age": 111}, 111),
    ({}, "222", {"token_max_age": 111}, 222),
    ({"FEEDBACK_TOKEN_MAX_AGE": 333}, "222", {"token_max_age": 111}, 333),
    ({"FEEDBACK_TOKEN_MAX_AGE": 333}, None, {}, 333),
], ids=["defaults", "options", "env-over-options", "config-over-all", "config"])
def test_precedence_config_env_options_defaults(new_app, tmp_path, monkeypatch, config: dict[str, Any],
                                                env: str | None, options: dict[str, Any], expected: int) -> None:
    if env is not None:
        monkeypatch.setenv("FEEDBACK_TOKEN_MAX_AGE", env)
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), **config)
    FeedbackBridge(app, **options)
    assert app.config["FEEDBACK_TOKEN_MAX_AGE"] == expected
    assert runtime(app).settings.token_max_age == expected


def test_environment_values_are_parsed_like_from_prefixed_env(new_app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEEDBACK_ALLOWED_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("FEEDBACK_ALLOW_UNSIGNED", "true")
    monkeypatch.setenv("FEEDBACK_SETTLE_SECONDS", "0.25")
    monkeypatch.setenv("FEEDBACK_URL_PREFIX", "/from-env")  # not JSON: stays a string
    monkeypatch.setenv("FEEDBACK_PROVIDERS__log__mode", "event")  # "__" nests
    monkeypatch.setenv("FEEDBACK_DATABASE_URL", sqlite_url(tmp_path, "env.sqlite3"))
    app = new_app()
    FeedbackBridge(app)
    settings = runtime(app).settings
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.allow_unsigned is True
    assert settings.settle_seconds == 0.25
    assert settings.url_prefix == "/from-env"
    assert settings.database_url.endswith("env.sqlite3")
    assert runtime(app).adapters["log"].mode == "event"
    assert app.test_client().get("/from-env/health").get_json()["providers"] == ["log"]


def test_allowed_origins_may_be_a_comma_separated_string(new_app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEEDBACK_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    FeedbackBridge(app)
    assert runtime(app).settings.allowed_origins == ["https://a.example", "https://b.example"]
    response = app.test_client().get("/feedback/health", headers={"Origin": "https://b.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://b.example"


def test_environment_json_settings_with_options(new_app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEEDBACK_WORKER_CONCURRENCY", "0")
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    with pytest.raises(ConfigurationError, match="WORKER_CONCURRENCY"):
        FeedbackBridge(app, worker_concurrency=2)


def test_default_database_is_a_sqlite_file_in_the_instance_folder(new_app) -> None:
    app = new_app()
    bridge = FeedbackBridge(app)
    path = os.path.join(app.instance_path, "feedback.sqlite3")
    assert app.config["FEEDBACK_DATABASE_URL"] == f"sqlite:///{path}"
    with app.app_context():
        bridge.register_message(conversation_id="c", message_id="m", user_id="u")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT conversation_id, message_id FROM feedback_messages").fetchall() == [("c", "m")]


@pytest.mark.parametrize("prefix", ["/api/fb", "/api/fb/", "api/fb"])
def test_url_prefix_moves_every_route(new_app, tmp_path, prefix: str) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), FEEDBACK_URL_PREFIX=prefix)
    FeedbackBridge(app)
    token = register(app)
    client = app.test_client()
    assert client.get("/api/fb/health").status_code == 200
    assert client.get("/api/fb/widget.js").status_code == 200
    assert client.get("/api/fb/state", query_string={"token": token}).status_code == 200
    assert client.post("/api/fb/events", json={"events": [event("thumbs_up", token)]}).status_code == 200
    assert client.get("/feedback/health").status_code == 404
    assert client.get("/api/fb/events").is_json  # JSON errors follow the prefix
    paths = client.get("/api/fb/openapi.json").get_json()["paths"]
    assert "/api/fb/events" in paths and "/api/fb/state" in paths
    assert not any(path.startswith("/feedback/") for path in paths)


def test_the_host_apps_own_http_error_handler_keeps_working(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))

    @app.errorhandler(HTTPException)
    def host_errors(exc: HTTPException):
        return f"host says {exc.code}", exc.code

    @app.get("/only-get")
    def only_get() -> str:
        return "ok"

    FeedbackBridge(app)
    client = app.test_client()
    assert client.get("/missing").get_data(as_text=True) == "host says 404"
    assert client.post("/only-get").get_data(as_text=True) == "host says 405"
    ours = client.get("/feedback/events")
    assert ours.status_code == 405 and ours.is_json


# -- errors ------------------------------------------------------------------------------------------


def test_register_message_outside_an_app_context(new_app, tmp_path) -> None:
    bridge = FeedbackBridge(new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3")))
    with pytest.raises(NotInitializedError, match="application context") as info:
        bridge.register_message(conversation_id="c", message_id="m", user_id="u")
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(NotInitializedError, match="application context"):
        bridge.get_state("token")


def test_register_message_on_an_app_without_init_app(new_app, tmp_path) -> None:
    FeedbackBridge(new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3")))
    other = new_app()
    with other.app_context(), pytest.raises(NotInitializedError, match="Did you forget to call init_app"):
        FeedbackBridge().register_message(conversation_id="c", message_id="m", user_id="u")


def test_init_app_twice_is_an_error(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    bridge = FeedbackBridge(app)
    first = runtime(app)
    with pytest.raises(ConfigurationError, match="already"):
        bridge.init_app(app)
    with pytest.raises(ConfigurationError, match="already"):
        FeedbackBridge().init_app(app)
    assert runtime(app) is first
    assert app.test_client().get("/feedback/health").status_code == 200


@pytest.mark.parametrize("secret", [None, ""])
def test_no_secret_key_is_a_clear_error_and_stores_nothing(new_app, tmp_path, secret: str | None) -> None:
    app = new_app(SECRET_KEY=secret, FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    bridge = FeedbackBridge(app)  # init_app itself does not need the secret
    with app.app_context(), pytest.raises(ConfigurationError, match="SECRET_KEY"):
        bridge.register_message(conversation_id="c", message_id="m", user_id="u")
    assert count(app, messages) == 0


def test_secret_key_set_after_init_app_is_honoured(new_app, tmp_path) -> None:
    app = new_app(SECRET_KEY=None, FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    FeedbackBridge(app)
    app.config["SECRET_KEY"] = "late"
    token = register(app)
    assert app.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token)]}) \
        .status_code == 200


def test_unknown_provider_names_the_known_ones_and_opens_no_database(new_app) -> None:
    app = new_app(FEEDBACK_PROVIDERS={"qbusiness-typo": {}})
    with pytest.raises(ConfigurationError) as info:
        FeedbackBridge(app)
    message = str(info.value)
    assert "qbusiness-typo" in message
    assert ADAPTERS and all(name in message for name in ADAPTERS)
    assert "feedback_bridge" not in app.extensions
    assert not os.path.exists(os.path.join(app.instance_path, "feedback.sqlite3"))


@pytest.mark.parametrize(("providers", "named"), [
    ({"log": {"mode": "sideways"}}, "log"),
    ({"log": {"no_such_option": 1}}, "log"),
    ({"custom": {"adapter": "feedback_bridge.nowhere:Nothing"}}, "feedback_bridge.nowhere:Nothing"),
    ({"custom": {"adapter": "builtins:dict"}}, "custom"),
])
def test_invalid_provider_options(new_app, tmp_path, providers: dict[str, Any], named: str) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), FEEDBACK_PROVIDERS=providers)
    with pytest.raises(ConfigurationError) as info:
        FeedbackBridge(app)
    assert named in str(info.value)


@pytest.mark.parametrize(("key", "value"), [
    ("WORKER_CONCURRENCY", 0),
    ("WORKER_CONCURRENCY", "many"),
    ("MAX_ATTEMPTS", 0),
    ("SETTLE_SECONDS", -1),
    ("TOKEN_MAX_AGE", 0),
    ("TOKEN_MAX_AGE", None),
    ("POLL_SECONDS", 0),
    ("LEASE_SECONDS", -5),
    ("BACKOFF_BASE", 0),
    ("BACKOFF_MAX", -1),
    ("MAX_CONTENT_LENGTH", 0),
    ("URL_PREFIX", 5),
    ("PROVIDERS", ["log"]),
    ("ALLOWED_ORIGINS", None),
    ("WORKER", "maybe"),
    ("ALLOW_UNSIGNED", "sometimes"),
    ("SQLITE_SYNCHRONOUS", "OFF"),
    ("SQLITE_SYNCHRONOUS", 2),
])
def test_invalid_values_are_configuration_errors(new_app, tmp_path, key: str, value: Any) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), **{f"FEEDBACK_{key}": value})
    with pytest.raises(ConfigurationError):
        FeedbackBridge(app)
    assert "feedback_bridge" not in app.extensions


@pytest.mark.parametrize(("value", "expected"), [("off", False), ("no", False), ("1", True), ("yes", True),
                                                 (0, False), (True, True)])
def test_boolean_settings_accept_the_usual_spellings(new_app, tmp_path, value: Any, expected: bool) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), FEEDBACK_ALLOW_UNSIGNED=value)
    FeedbackBridge(app)
    assert runtime(app).settings.allow_unsigned is expected


@pytest.mark.parametrize(("value", "level"), [(None, 1), ("full", 2), ("EXTRA", 3)])
def test_sqlite_synchronous_is_set_on_every_connection(new_app, tmp_path, value: str | None, level: int) -> None:
    """NORMAL (1) by default; FULL (2) or EXTRA (3) when set: the pragma is per connection, so each pooled one."""
    config = {"FEEDBACK_SQLITE_SYNCHRONOUS": value} if value else {}
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), **config)
    FeedbackBridge(app)
    engine = runtime(app).engine
    with engine.connect() as first, engine.connect() as second:  # two pooled connections, neither writing
        levels = [conn.execution_options(sqlite_begin="DEFERRED").exec_driver_sql("PRAGMA synchronous").scalar()
                  for conn in (first, second)]
    assert levels == [level, level]


def test_sqlite_synchronous_off_names_the_levels_offered(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"), FEEDBACK_SQLITE_SYNCHRONOUS="off")
    with pytest.raises(ConfigurationError, match="must be one of NORMAL, FULL, EXTRA, not 'off'"):
        FeedbackBridge(app)


@pytest.mark.parametrize("kwargs", [
    {"conversation_id": ""},
    {"message_id": "x" * 257},
    {"user_id": "x" * 1025},
    {"user_id": None},
    {"refs": {"log": "not-a-dict"}},
])
def test_register_message_validates_its_arguments(new_app, tmp_path, kwargs: dict[str, Any]) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    bridge = FeedbackBridge(app)
    args = {"conversation_id": "c", "message_id": "m", "user_id": "u", **kwargs}
    with app.app_context(), pytest.raises(ValueError):
        bridge.register_message(**args)
    assert count(app, messages) == 0


def test_registering_again_updates_the_same_message(new_app, tmp_path) -> None:
    app = new_app(FEEDBACK_DATABASE_URL=sqlite_url(tmp_path, "a.sqlite3"))
    FeedbackBridge(app)
    first = register(app, output="first answer")
    second = register(app, output="edited answer", user_id="bob@example.com")
    assert count(app, messages) == 1
    assert runtime(app).store.find_message("c-1", "m-1").output == "edited answer"
    client = app.test_client()
    for token in (first, second):
        assert client.post("/feedback/events", json={"events": [event("thumbs_up", token)]}).status_code == 200


# -- the worker --------------------------------------------------------------------------------------


class SignallingAdapter(RecordingAdapter):
    """A RecordingAdapter that also signals each completed send."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.delivered = threading.Event()

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        response = super().send(request)
        self.delivered.set()
        return response


def test_worker_starts_on_the_first_request_and_delivers(make_app) -> None:
    adapter = SignallingAdapter("rec")
    app = make_app(FEEDBACK_WORKER=True, FEEDBACK_PROVIDERS={"rec": adapter}, FEEDBACK_POLL_SECONDS=0.2)
    bridge_runtime = runtime(app)
    token = register(app)
    assert bridge_runtime._worker_thread is None  # nothing started at init_app or register_message
    client = app.test_client()
    response = client.post("/feedback/events", json={"events": [event("thumbs_down", token, reason="NOT_HELPFUL")]})
    assert response.status_code == 200
    thread = bridge_runtime._worker_thread
    assert thread is not None and thread.is_alive()
    assert adapter.delivered.wait(10), "the worker did not deliver within 10 s"
    assert adapter.sent[0]["message_id"] == "m-1"
    assert adapter.sent[0]["state"]["vote"] == "down"
    assert adapter.sent[0]["state"]["reason"] == "NOT_HELPFUL"
    client.get("/feedback/health")
    assert bridge_runtime._worker_thread is thread  # started once
    bridge_runtime.close()  # stops and joins the worker thread
    assert not thread.is_alive()


def test_no_worker_thread_when_disabled(make_app) -> None:
    app = make_app(FEEDBACK_WORKER=False, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    token = register(app)
    app.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token)]})
    assert runtime(app)._worker_thread is None
    assert runtime(app).worker.run_once() == 1  # the delivery waits in the outbox for an external worker


def test_no_worker_thread_without_providers(make_app) -> None:
    app = make_app(FEEDBACK_WORKER=True)
    app.test_client().get("/feedback/health")
    assert runtime(app)._worker_thread is None


# -- logging -----------------------------------------------------------------------------------------


def test_library_logger_has_only_a_null_handler() -> None:
    handlers = logging.getLogger("feedback_bridge").handlers
    assert len(handlers) == 1
    assert isinstance(handlers[0], logging.NullHandler)
