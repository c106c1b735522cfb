"""feedback-bridge: collect end-user feedback on AI chat answers and deliver it to provider feedback APIs."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from .exceptions import (
    ConfigurationError,
    CredentialsError,
    DeliveryError,
    FeedbackBridgeError,
    NotInitializedError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TokenError,
)
from .extension import FeedbackBridge
from .models import DeliveryStatus, EventType
from .providers import DeliveryContext, ProviderAdapter, Skip

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ConfigurationError",
    "CredentialsError",
    "DeliveryContext",
    "DeliveryError",
    "DeliveryStatus",
    "EventType",
    "FeedbackBridge",
    "FeedbackBridgeError",
    "NotInitializedError",
    "PermanentDeliveryError",
    "ProviderAdapter",
    "RetryableDeliveryError",
    "Skip",
    "TokenError",
    "__version__",
]
