"""Strict local emulators of the provider feedback APIs, for our tests, the demo and your own tests.

Each is a real HTTP server on 127.0.0.1 that validates requests as the vendor documents them, records what it
received and can be told to fail (see :class:`~feedback_bridge.testing.server.EmulatorServer`).
"""

from __future__ import annotations

from .aws import QBusinessEmulator, QConnectEmulator
from .moveworks import MoveworksEmulator, MoveworksMessage
from .nebuly import NebulyEmulator
from .server import FAULT_KINDS, EmulatorServer, Received

__all__ = [
    "FAULT_KINDS",
    "EmulatorServer",
    "MoveworksEmulator",
    "MoveworksMessage",
    "NebulyEmulator",
    "QBusinessEmulator",
    "QConnectEmulator",
    "Received",
]
