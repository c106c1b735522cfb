"""Every error feedback-bridge raises derives from :class:`FeedbackBridgeError`."""

from __future__ import annotations


class FeedbackBridgeError(Exception):
    """Root of all feedback-bridge errors."""


class ConfigurationError(FeedbackBridgeError):
    """The extension or a provider is configured in a way that cannot work."""


class NotInitializedError(ConfigurationError, RuntimeError):
    """The extension is used with an app it was never initialised on."""


class UnknownMessageError(FeedbackBridgeError, LookupError):
    """A token or event names a message that was never registered (or was purged)."""


class TokenError(FeedbackBridgeError):
    """A message token cannot be trusted. ``code`` is the machine-readable reason sent to clients."""

    code = "token_invalid"


class TokenMissing(TokenError):
    code = "token_missing"


class TokenInvalid(TokenError):
    """Forged, tampered with, or signed with a key we do not know."""

    code = "token_invalid"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenMismatch(TokenError):
    """A valid token used for a message or user it was not issued for."""

    code = "token_mismatch"


class DeliveryError(FeedbackBridgeError):
    """A provider did not take a delivery. Adapters raise the narrow subclasses below.

    ``response`` is what the provider answered (status, headers, body), kept in the outbox.
    """

    def __init__(self, message: str, *, response: dict | None = None) -> None:
        super().__init__(message)
        self.response = response


class RetryableDeliveryError(DeliveryError):
    """Throttling, timeouts, connection errors, 5xx: try again later.

    ``retry_after`` (seconds) is the provider's own hint, honoured by the outbox when given.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, response: dict | None = None):
        super().__init__(message, response=response)
        self.retry_after = retry_after


class CredentialsError(DeliveryError):
    """The provider refused our credentials (401/403). Not retried until an operator acts."""


class PermanentDeliveryError(DeliveryError):
    """The request can never succeed as it is (validation errors, unknown resources)."""
