"""Signed per-message tokens: who may give feedback on which message, until when."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from .exceptions import ConfigurationError, TokenExpired, TokenInvalid, TokenMissing

SALT = "feedback-bridge.message-token.v1"


def message_key(conversation_id: str, message_id: str) -> str:
    """A short digest of the message's own ids, carried in its token next to the row id.

    Row ids can be reused (SQLite hands out the highest id again once that row is deleted, and two
    databases share a secret key but not their ids); the key keeps a token from ever speaking for a
    message other than the one it was issued for.
    """
    raw = json.dumps([conversation_id, message_id]).encode("ascii")  # unambiguous, whatever the ids hold
    return base64.urlsafe_b64encode(hashlib.blake2b(raw, digest_size=9).digest()).decode("ascii")


class TokenClaims(NamedTuple):
    message_pk: int
    user_id: str
    message_key: str


class MessageTokens:
    """Issues and verifies tokens binding a message (by its row id and ids) to a user.

    Signed with the app's ``SECRET_KEY``; keys in ``SECRET_KEY_FALLBACKS`` (Flask's own rotation
    setting) still verify, so rotating the secret does not break pages already rendered.
    """

    def __init__(
        self, secret_key: str | bytes | None, fallbacks: Sequence[str | bytes] | str | bytes = ()
    ) -> None:
        if not secret_key:
            raise ConfigurationError(
                "feedback-bridge signs message tokens with the app's SECRET_KEY, which is not set. "
                "Set app.config['SECRET_KEY'] to a long random string (FEEDBACK_ALLOW_UNSIGNED does not replace "
                "it: register_message and GET /state still use tokens)."
            )
        if isinstance(fallbacks, (str, bytes)):
            fallbacks = [fallbacks]  # one old key, not one key per character
        # itsdangerous signs with the last key and verifies with any of them.
        self._serializer = URLSafeTimedSerializer([*fallbacks, secret_key], salt=SALT)

    def issue(self, message_pk: int, user_id: str, key: str) -> str:
        """A token for ``user_id`` on the message with row id ``message_pk`` and :func:`message_key` ``key``."""
        return self._serializer.dumps([message_pk, user_id, key])

    def verify(self, token: str | None, max_age: int) -> TokenClaims:
        """Return the token's claims or raise a :class:`~feedback_bridge.exceptions.TokenError`."""
        if not token:
            raise TokenMissing("A message token is required.")
        if not isinstance(token, str) or not token.isascii():
            raise TokenInvalid("The message token is not valid.")  # tokens are URL-safe ASCII
        try:
            payload = self._serializer.loads(token, max_age=max_age)
        except SignatureExpired as exc:
            raise TokenExpired("The message token has expired; reload the page for a new one.") from exc
        except BadData as exc:
            raise TokenInvalid("The message token is not valid.") from exc
        if not (
            isinstance(payload, list) and len(payload) == 3
            and type(payload[0]) is int and all(isinstance(p, str) for p in payload[1:])
        ):
            raise TokenInvalid("The message token is not valid.")
        return TokenClaims(payload[0], payload[1], payload[2])
