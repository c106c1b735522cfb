"""Helpers for the Amazon Q suites: fake credentials boto3 signs with, the full event path, and raw SigV4-signed
requests for the emulators' strictness tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from flask import Flask

from conftest import runtime
from feedback_bridge.providers import aws
from support import outbox_rows, post_events

ACCESS_KEY = "AKIAFEEDBACKBRIDGE01"
SECRET_KEY = "fake-secret-key-for-the-emulators"
CREDENTIALS = {ACCESS_KEY: SECRET_KEY}
REGION = "us-east-1"
# Short timeouts keep the fault tests fast; they are far above a loopback round trip.
FAST = {"connect_timeout": 1.0, "read_timeout": 1.0}


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch, secret: str = SECRET_KEY) -> None:
    """boto3's normal chain finds these in the environment; no file or instance metadata is consulted."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret, "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(key, raising=False)
    if secret != SECRET_KEY:
        aws.forget_clients()  # cached clients hold the credentials they were created with


def deliver(app: Flask, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the events, run the worker until nothing is due, return the outbox."""
    post_events(app, *events)
    runtime(app).worker.drain()
    return outbox_rows(app)


def signed_request(method: str, url: str, body: Any = None, *, service: str, secret: str = SECRET_KEY,
                   access_key: str = ACCESS_KEY, region: str = REGION, raw: bytes | None = None,
                   tamper: bytes | None = None) -> requests.Response:
    """Send a request signed with SigV4 by botocore's signer, body as given (even if boto3 would refuse it).
    ``tamper`` replaces the body after signing."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    prepared = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(Credentials(access_key, secret), service, region).add_auth(prepared)
    sent_headers = {k: v for k, v in prepared.headers.items()}
    return requests.request(method, url, data=tamper if tamper is not None else data, headers=sent_headers, timeout=5)
