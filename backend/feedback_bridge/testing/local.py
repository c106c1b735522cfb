"""All four provider emulators in one process, with the ``FEEDBACK_PROVIDERS`` that point at them.

What the demo runs, and a quick way to see real deliveries in your own app or tests with no cloud account::

    with LocalProviders() as local:
        app.config["FEEDBACK_PROVIDERS"] = local.providers_config()
        token = bridge.register_message(..., refs=local.new_message_refs(user_id, question, answer))

Credentials are made up per instance: the emulators check them exactly as the vendors would (SigV4 for AWS,
bearer tokens for Moveworks and Nebuly), so a misconfigured adapter fails here as it would for real.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timezone
from typing import Any

from .aws import QBusinessEmulator, QConnectEmulator
from .moveworks import MoveworksEmulator
from .nebuly import NebulyEmulator
from .server import EmulatorServer

REGION = "us-east-1"


class LocalProviders:
    def __init__(self, *, assistant_name: str = "feedback-bridge-demo") -> None:
        self.application_id = str(uuid.uuid4())  # 36 characters, as Q Business ids are
        self.assistant_id = str(uuid.uuid4())
        self.assistant_name = assistant_name
        self._aws_key = ("AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
        self._moveworks_token = secrets.token_urlsafe(24)
        self._nebuly_key = "nb-" + secrets.token_urlsafe(24)
        aws_credentials = {self._aws_key[0]: self._aws_key[1]}
        self.qbusiness = QBusinessEmulator(applications=[self.application_id], credentials=aws_credentials,
                                           region=REGION)
        self.qconnect = QConnectEmulator(assistants=[self.assistant_id], credentials=aws_credentials, region=REGION)
        self.moveworks = MoveworksEmulator(tokens={self._moveworks_token}, assistant_name=assistant_name)
        self.nebuly = NebulyEmulator(api_keys={self._nebuly_key})

    @property
    def emulators(self) -> dict[str, EmulatorServer]:
        return {"qbusiness": self.qbusiness, "qconnect": self.qconnect, "moveworks": self.moveworks,
                "nebuly": self.nebuly}

    def start(self) -> LocalProviders:
        started: list[EmulatorServer] = []
        try:
            for emulator in self.emulators.values():
                started.append(emulator.start())
        except BaseException:
            for emulator in started:
                emulator.stop()
            raise
        return self

    def stop(self) -> None:
        for emulator in self.emulators.values():
            emulator.stop()

    def __enter__(self) -> LocalProviders:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def providers_config(self, **per_provider: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``FEEDBACK_PROVIDERS`` for the running emulators; ``qbusiness={...}`` etc. add or override options."""
        aws = {"region_name": REGION, "static_credentials": list(self._aws_key)}
        config = {
            "qbusiness": {**aws, "application_id": self.application_id, "endpoint_url": self.qbusiness.url},
            "qconnect": {**aws, "assistant_id": self.assistant_id, "endpoint_url": self.qconnect.url},
            "moveworks": {"base_url": self.moveworks.base_url, "assistant_name": self.assistant_name,
                          "token": self._moveworks_token},
            "nebuly": {"base_url": self.nebuly.url, "api_key": self._nebuly_key},
        }
        for name, options in per_provider.items():
            config[name] = {**config[name], **options}
        return config

    def new_message_refs(self, user_id: str, input: str, output: str, *,
                         answered_at: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Provider ids for a new assistant message, made the way each platform makes them, and made known
        to the emulators that check them (Moveworks' callback ids, Nebuly's interaction)."""
        answered_at = answered_at or datetime.now(timezone.utc)
        self.nebuly.add_interaction(user_id, input, output, answered_at)
        return {
            "qbusiness": {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())},
            "qconnect": {"target_id": str(uuid.uuid4()), "target_type": "MESSAGE"},
            "moveworks": self.moveworks.add_message().refs(),
            "nebuly": {},
        }
