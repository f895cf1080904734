"""Model prices: the deployment's own price when config sets one, else the bundled table (data/prices.json).

Upstreams name models with snapshot dates and prefixes the table does not list: ``gpt-4o-mini-2024-07-18``,
``claude-sonnet-4-5-20250929``, ``models/gemini-2.5-flash``, ``gemini-2.5-flash-preview-05-20``. Only those known
decorations are stripped; there is deliberately no prefix matching, because ``gpt-5-nano`` must not be priced
as ``gpt-5`` nor ``gpt-4o-mini-audio`` as ``gpt-4o-mini``: an unknown model has no price (``None``), and its cost
shows as zero rather than as a confident wrong number.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from ..providers.base import Price

__all__ = ["base_model", "load_table", "price_for"]

# Provider names that share another provider's price list.
_PROVIDER_ALIASES = {"google": "gemini", "vertex": "gemini", "azure": "openai"}
# Snapshot suffixes: -2024-07-18 (OpenAI), -20250929 (Anthropic), -preview-05-20 / -001 / -latest (Gemini).
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),
    re.compile(r"-\d{8}$"),
    re.compile(r"-preview(-\d{2}-\d{2})?$"),
    re.compile(r"-\d{3}$"),
    re.compile(r"-latest$"),
)


@functools.cache
def load_table() -> dict[str, Any]:
    """The bundled price file, parsed once."""
    text = resources.files("slipstream").joinpath("data/prices.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def base_model(model: str) -> str:
    """The model id without path prefixes and snapshot suffixes (``models/gemini-2.5-pro-001`` ->
    ``gemini-2.5-pro``)."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    changed = True
    while changed:  # e.g. "-preview-05-20" then nothing, or "-20250929" then nothing
        changed = False
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", name)
            if stripped != name and stripped:
                name, changed = stripped, True
    return name


def price_for(provider: str, model: str, override: Price | None = None) -> Price | None:
    """The price of ``model`` served by ``provider``; ``override`` (a deployment's configured price) wins."""
    if override is not None:
        return override
    return _lookup(provider.lower(), model)


@functools.lru_cache(maxsize=1024)
def _lookup(provider: str, model: str) -> Price | None:
    table = load_table()
    provider = _PROVIDER_ALIASES.get(provider, provider)
    models: dict[str, dict[str, float]] = table["models"].get(provider, {})
    aliases: dict[str, str] = table.get("aliases", {}).get(provider, {})
    for candidate in (model.rsplit("/", 1)[-1].strip().lower(), base_model(model)):
        entry = models.get(aliases.get(candidate, candidate))
        if entry is not None:
            return Price(
                input=float(entry["input"]),
                output=float(entry["output"]),
                cached_input=None if entry.get("cached_input") is None else float(entry["cached_input"]),
            )
    return None
