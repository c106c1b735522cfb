"""Provider adapters and the registry that turns ``FEEDBACK_PROVIDERS`` into adapter instances."""

from __future__ import annotations

import importlib
from typing import Any

from ..exceptions import ConfigurationError
from .base import DeliveryContext, ProviderAdapter, Skip
from .log import LogAdapter

__all__ = ["ADAPTERS", "DeliveryContext", "LogAdapter", "ProviderAdapter", "Skip", "build_adapters"]

# Built-in adapters by name. Vendor adapters are named by import path, so boto3 and friends are only imported
# when a provider that needs them is configured.
ADAPTERS: dict[str, type[ProviderAdapter] | str] = {
    "log": LogAdapter,
    "qbusiness": "feedback_bridge.providers.qbusiness:QBusinessAdapter",
    "qconnect": "feedback_bridge.providers.qconnect:QConnectAdapter",
    "moveworks": "feedback_bridge.providers.moveworks:MoveworksAdapter",
    "nebuly": "feedback_bridge.providers.nebuly:NebulyAdapter",
}


def build_adapters(config: dict[str, Any]) -> dict[str, ProviderAdapter]:
    """``{"name": {options}}`` -> adapters. An ``"adapter"`` option names a class (or ``"pkg.mod:Class"``)
    for a custom provider; an adapter instance may also be given directly."""
    adapters: dict[str, ProviderAdapter] = {}
    for name, options in config.items():
        if isinstance(options, ProviderAdapter):
            adapters[name] = options
            continue
        options = dict(options or {})
        cls = _resolve(name, options.pop("adapter", None))
        try:
            adapters[name] = cls(name, **options)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"FEEDBACK_PROVIDERS[{name!r}] is invalid: {exc}") from exc
    return adapters


def _resolve(name: str, adapter: Any) -> type[ProviderAdapter]:
    if adapter is None:
        if name not in ADAPTERS:
            known = ", ".join(sorted(ADAPTERS))
            raise ConfigurationError(
                f"Unknown provider {name!r} in FEEDBACK_PROVIDERS (known: {known}). "
                "Give an 'adapter' option to plug in your own."
            )
        adapter = ADAPTERS[name]
    if isinstance(adapter, str):
        module_name, _, attr = adapter.partition(":")
        try:
            adapter = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"Cannot import provider adapter {adapter!r}: {exc}") from exc
    if not (isinstance(adapter, type) and issubclass(adapter, ProviderAdapter)):
        raise ConfigurationError(f"Provider {name!r}: adapter must be a ProviderAdapter subclass.")
    return adapter
