"""Provider adapters: one module each, registered through ``register_provider``."""

from __future__ import annotations

import importlib

from .base import Deployment, Provider, Timeouts, get_provider_class, register_provider

__all__ = [
    "Deployment",
    "Provider",
    "Timeouts",
    "get_provider_class",
    "load_builtin_providers",
    "register_provider",
]

_BUILTINS = ("openai", "anthropic", "gemini", "sim")
_loaded = False


def load_builtin_providers() -> None:
    """Import the built-in adapters once; each registers itself as a plugin would."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in _BUILTINS:
        importlib.import_module(f"{__name__}.{name}")
