"""Signed per-message tokens: who may give feedback on which message, until when."""

from __future__ import annotations

from collections.abc import Sequence

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from .exceptions import ConfigurationError, TokenExpired, TokenInvalid, TokenMissing

SALT = "feedback-bridge.message-token.v1"


class MessageTokens:
    """Issues and verifies tokens binding a message (by its row id) to a user.

    Signed with the app's ``SECRET_KEY``; keys in ``SECRET_KEY_FALLBACKS`` (Flask's own rotation
    setting) still verify, so rotating the secret does not break pages already rendered.
    """

    def __init__(self, secret_key: str | bytes | None, fallbacks: Sequence[str | bytes] = ()) -> None:
        if not secret_key:
            raise ConfigurationError(
                "feedback-bridge signs message tokens with the app's SECRET_KEY, which is not set. "
                "Set app.config['SECRET_KEY'], or FEEDBACK_ALLOW_UNSIGNED=True for apps behind their own auth."
            )
        # itsdangerous signs with the last key and verifies with any of them.
        self._serializer = URLSafeTimedSerializer([*fallbacks, secret_key], salt=SALT)

    def issue(self, message_pk: int, user_id: str) -> str:
        return self._serializer.dumps([message_pk, user_id])

    def verify(self, token: str | None, max_age: int) -> tuple[int, str]:
        """Return ``(message_pk, user_id)`` or raise a :class:`~feedback_bridge.exceptions.TokenError`."""
        if not token:
            raise TokenMissing("A message token is required.")
        try:
            payload = self._serializer.loads(token, max_age=max_age)
        except SignatureExpired as exc:
            raise TokenExpired("The message token has expired; reload the page for a new one.") from exc
        except BadData as exc:
            raise TokenInvalid("The message token is not valid.") from exc
        if not (
            isinstance(payload, list) and len(payload) == 2
            and isinstance(payload[0], int) and isinstance(payload[1], str)
        ):
            raise TokenInvalid("The message token is not valid.")
        return payload[0], payload[1]
