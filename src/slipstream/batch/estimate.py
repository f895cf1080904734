"""Dry-run estimates: the tokens and USD a batch would spend, from the request bodies alone, nothing called.

Tokens come from the limiter's estimator (``slipstream.limits.tokens.estimate_tokens``, whose measured error is
in that module): the prompt from the messages, tools and response format; the completion as the request's
``max_completion_tokens`` (or ``max_tokens``) times ``n``, or ``DEFAULT_COMPLETION_TOKENS`` per choice when it
caps neither — an allowance, so usually an upper bound. Prices (USD per 1M tokens) are the primary deployment's
configured ``price``, else the bundled table (``slipstream.observe.prices``); a model with neither is counted
and shown without a cost rather than with a guessed one. The estimate assumes a cold cache: hits and coalesced
duplicates would make the real run cheaper, never dearer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ModelGroup
from ..limits.tokens import DEFAULT_COMPLETION_TOKENS, estimate_tokens
from ..observe.prices import price_for
from ..providers.base import Deployment, Price
from .reader import BatchRequest

__all__ = ["Estimate", "ModelEstimate", "group_for", "price_of_group", "split_tokens"]

_COMPLETION_CAPS = ("max_completion_tokens", "max_tokens")


def group_for(config: Config, model: str) -> ModelGroup | None:
    """The model group ``model`` names in ``config``, as ``Pipeline.resolve`` finds it, without building a
    pipeline (which would open stores and Redis connections a dry run must not touch); None if not served."""
    group = config.model_groups.get(model)
    if group is not None:
        return group
    provider, _, name = model.partition("/")
    if name and provider in config.passthrough:
        return ModelGroup(model, (Deployment(provider=provider, model=name, name=model),))
    return None


def price_of_group(group: ModelGroup) -> Price | None:
    """The price a batch is charged for a model group: its primary deployment's (fallbacks rarely run)."""
    primary = group.deployments[0]
    return price_for(primary.provider, primary.model, primary.price)


def split_tokens(body: Mapping[str, Any]) -> tuple[int, int]:
    """Estimated (prompt tokens, completion allowance) of one chat or embeddings body."""
    total = estimate_tokens(body)
    if not any(key in body for key in _COMPLETION_CAPS):
        prompt = estimate_tokens(body, completion_default=0)
    else:
        prompt = estimate_tokens(
            {k: v for k, v in body.items() if k not in _COMPLETION_CAPS}, completion_default=0
        )
    return prompt, total - prompt


@dataclass(slots=True)
class ModelEstimate:
    model: str
    known: bool = True  # False: the config serves no such model, so these requests would fail
    price: Price | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price.input + self.completion_tokens * self.price.output) / 1e6


@dataclass(slots=True)
class Estimate:
    """Per-model totals of the requests a run would send with ``config``."""

    config: Config
    models: dict[str, ModelEstimate] = field(default_factory=dict)

    def add(self, item: BatchRequest) -> None:
        model = item.request.model
        row = self.models.get(model)
        if row is None:
            row = self.models[model] = self._row(model)
        prompt, completion = split_tokens(item.request.body)
        row.requests += 1
        row.prompt_tokens += prompt
        row.completion_tokens += completion

    def _row(self, model: str) -> ModelEstimate:
        group = group_for(self.config, model)
        if group is None:
            return ModelEstimate(model, known=False)
        return ModelEstimate(model, price=price_of_group(group))

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.models.values())

    def lines(self) -> list[str]:
        """A plain table, one row per model and a total."""
        header = ("model", "requests", "prompt tokens", "completion tokens", "est. cost")
        rows = [_cells(row) for row in sorted(self.models.values(), key=lambda r: r.model)]
        costs = [row.cost for row in self.models.values() if row.cost is not None]
        rows.append(
            (
                "total",
                f"{self.requests:,}",
                f"{sum(r.prompt_tokens for r in self.models.values()):,}",
                f"{sum(r.completion_tokens for r in self.models.values()):,}",
                _total_cost(costs, len(self.models)),
            )
        )
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        out = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in (header, *rows)
        ]
        out.append(
            f"completion tokens are each request's max_tokens (or {DEFAULT_COMPLETION_TOKENS} when unset): "
            "an upper bound; cache hits would cost nothing."
        )
        unknown = sorted(r.model for r in self.models.values() if not r.known)
        if unknown:
            out.append(f"not served by this config (these requests would fail): {', '.join(unknown)}")
        return out


def _total_cost(costs: list[float], models: int) -> str:
    if not costs:
        return "no price"
    return f"${sum(costs):,.4f}" + ("" if len(costs) == models else " + unpriced")


def _cells(row: ModelEstimate) -> tuple[str, str, str, str, str]:
    cost = row.cost
    shown = f"${cost:,.4f}" if cost is not None else ("unknown model" if not row.known else "no price")
    return (row.model, f"{row.requests:,}", f"{row.prompt_tokens:,}", f"{row.completion_tokens:,}", shown)
