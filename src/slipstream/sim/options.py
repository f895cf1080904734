"""``SimOptions``: every knob of the simulated LLM in one frozen value object.

Options come from a deployment's ``options`` mapping, the ``slipstream sim --option key=value`` command line, or
a request's ``"sim": {...}`` field (per-request overrides). All three go through ``from_dict``/``merged``, which
reject unknown keys and bad values with an error naming the key. String values are converted to the field's
type, so command-line pairs can be passed as they are.

The default is the ``instant`` preset: no latency, no faults, no limits — tests and benchmarks never wait.
``realistic`` answers in about 2-3 s (TTFT ~0.5 s lognormal, ~60 tokens/s, 40-200 tokens);
``heavy_tail`` adds a Pareto tail to the TTFT of 5% of requests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest

__all__ = [
    "DEFAULT_CHUNK_TOKENS",
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_REPLY_TOKENS_MAX",
    "DEFAULT_REPLY_TOKENS_MIN",
    "DEFAULT_RETRY_AFTER",
    "DEFAULT_SLOW_STREAM_GAP",
    "DISTRIBUTIONS",
    "FAULT_KINDS",
    "PRESETS",
    "SimOptionError",
    "SimOptions",
]

DEFAULT_REPLY_TOKENS_MIN = 40
DEFAULT_REPLY_TOKENS_MAX = 400
DEFAULT_CHUNK_TOKENS = 4
DEFAULT_EMBEDDING_DIM = 256
DEFAULT_TAIL_FACTOR = 10.0
DEFAULT_TAIL_ALPHA = 1.5
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_SLOW_STREAM_GAP = 2.0

MAX_REPLY_TOKENS = 100_000
MAX_EMBEDDING_DIM = 8192

DISTRIBUTIONS = ("fixed", "normal", "lognormal")
TAIL_DISTRIBUTIONS = ("fixed", "pareto")
RATE_WINDOWS = ("sliding", "fixed")
# Faults a request can be forced into with ``"sim": {"fault": ...}`` (or a deployment with ``fault``).
FAULT_KINDS = ("429", "500", "502", "503", "hang", "slow_stream", "broken_stream", "malformed")

# Every preset names the same keys (latency and reply length), so switching presets replaces all of them.
PRESETS: dict[str, dict[str, Any]] = {
    "instant": {
        "ttft": 0.0,
        "ttft_dist": "fixed",
        "ttft_sigma": 0.0,
        "tokens_per_s": 0.0,
        "tps_dist": "fixed",
        "tps_sigma": 0.0,
        "tail_prob": 0.0,
        "tail_dist": "fixed",
        "tail_factor": DEFAULT_TAIL_FACTOR,
        "tail_alpha": DEFAULT_TAIL_ALPHA,
        "reply_tokens_min": DEFAULT_REPLY_TOKENS_MIN,
        "reply_tokens_max": DEFAULT_REPLY_TOKENS_MAX,
    },
}
PRESETS["realistic"] = {
    **PRESETS["instant"],
    "ttft": 0.5,
    "ttft_dist": "lognormal",
    "ttft_sigma": 0.4,
    "tokens_per_s": 60.0,
    "tps_dist": "normal",
    "tps_sigma": 10.0,
    "reply_tokens_min": 40,
    "reply_tokens_max": 200,
}
PRESETS["heavy_tail"] = {
    **PRESETS["realistic"],
    "tail_prob": 0.05,
    "tail_dist": "pareto",
    "tail_factor": 4.0,
}


class SimOptionError(InvalidRequest, ValueError):
    """A bad sim option: a 400 when it came in a request's ``sim`` field, a ``ValueError`` in config."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """The simulated model's behaviour. Times are seconds; rates are probabilities in [0, 1]."""

    preset: str = "instant"
    seed: int | None = None  # seeds the latency and fault RNG (None: a fresh random seed)

    # Replies: length in tokens when the request sets no max_tokens, stream chunk size, embedding size.
    reply_tokens_min: int = DEFAULT_REPLY_TOKENS_MIN
    reply_tokens_max: int = DEFAULT_REPLY_TOKENS_MAX
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    embedding_dim: int = DEFAULT_EMBEDDING_DIM

    # Latency: ``ttft`` and ``tokens_per_s`` are medians; ``*_sigma`` is the standard deviation (normal, same
    # unit) or the shape (lognormal). ``tokens_per_s`` 0 means unpaced. All zero: nothing ever sleeps.
    ttft: float = 0.0
    ttft_dist: str = "fixed"
    ttft_sigma: float = 0.0
    tokens_per_s: float = 0.0
    tps_dist: str = "fixed"
    tps_sigma: float = 0.0
    # With probability ``tail_prob`` the TTFT is multiplied by ``tail_factor`` ("fixed") or by ``tail_factor``
    # times a Pareto(``tail_alpha``) draw ("pareto", unbounded).
    tail_prob: float = 0.0
    tail_dist: str = "fixed"
    tail_factor: float = DEFAULT_TAIL_FACTOR
    tail_alpha: float = DEFAULT_TAIL_ALPHA

    # Faults, each with its own probability per request; ``fault`` forces one.
    error_rate: float = 0.0  # 500
    rate_429: float = 0.0
    retry_after: float = DEFAULT_RETRY_AFTER  # seconds, sent with injected 429s
    rate_5xx: float = 0.0  # 502 or 503
    hang_rate: float = 0.0  # never answers until the caller gives up
    slow_stream_rate: float = 0.0  # streams only: ``slow_stream_gap`` between chunks
    slow_stream_gap: float = DEFAULT_SLOW_STREAM_GAP
    broken_stream_rate: float = 0.0  # the reply stops half-way and the connection drops
    malformed_rate: float = 0.0  # a 200 whose body is not valid JSON
    fault: str | None = None

    # Limits the sim enforces itself (0: none), over a 60 s window.
    rpm_limit: int = 0
    tpm_limit: int = 0
    rate_window: str = "sliding"

    # Derived, for the hot path: does any fault rate need an RNG draw?
    has_fault_rates: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        has_rates = any(getattr(self, name) > 0 for name in _RATE_FIELDS)
        object.__setattr__(self, "has_fault_rates", has_rates)

    @property
    def instant(self) -> bool:
        """True when no request ever sleeps (no TTFT, unpaced tokens)."""
        return self.ttft == 0 and self.tokens_per_s == 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None) -> SimOptions:
        """Options from a mapping; ``preset`` is applied first, the other keys on top of it."""
        return DEFAULT_OPTIONS.merged(d or {})

    @classmethod
    def from_preset(cls, name: str) -> SimOptions:
        return cls.from_dict({"preset": name})

    def merged(self, overrides: Mapping[str, Any]) -> SimOptions:
        """A copy with ``overrides`` applied (a ``preset`` key first resets the values the preset sets)."""
        if not isinstance(overrides, Mapping):
            raise SimOptionError("sim options must be a JSON object", param="sim")
        if not overrides:
            return self
        changes: dict[str, Any] = {}
        if "preset" in overrides:
            preset = _coerce("preset", overrides["preset"])
            changes.update(PRESETS[preset])
            changes["preset"] = preset
        for key, value in overrides.items():
            if key != "preset":
                changes[key] = _coerce(key, value)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SPEC}


# ------------------------------------------------------------------------------------------ parsing, checks
_RATE_FIELDS = (
    "error_rate",
    "rate_429",
    "rate_5xx",
    "hang_rate",
    "slow_stream_rate",
    "broken_stream_rate",
    "malformed_rate",
)
_NON_NEGATIVE = (
    "ttft",
    "ttft_sigma",
    "tokens_per_s",
    "tps_sigma",
    "retry_after",
    "slow_stream_gap",
    "rpm_limit",
    "tpm_limit",
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "ttft_dist": DISTRIBUTIONS,
    "tps_dist": DISTRIBUTIONS,
    "tail_dist": TAIL_DISTRIBUTIONS,
    "rate_window": RATE_WINDOWS,
    "fault": FAULT_KINDS,
}
# name -> (type, may be None); built from the dataclass so a new field cannot be forgotten.
_SPEC: dict[str, tuple[type, bool]] = {}
_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}
for _f in dataclasses.fields(SimOptions):
    if _f.init:
        _SPEC[_f.name] = (_TYPES[str(_f.type)], str(_f.type).endswith("| None"))


def _coerce(key: Any, value: Any) -> Any:
    spec = _SPEC.get(key) if isinstance(key, str) else None
    if spec is None:
        raise SimOptionError(
            f"unknown sim option {key!r}; known: {', '.join(sorted(_SPEC))}", param=f"sim.{key}"
        )
    kind, optional = spec
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))):
        return None
    if kind is str:
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
        if text not in _CHOICES[key]:
            raise SimOptionError(
                f"sim option {key!r} must be one of {', '.join(_CHOICES[key])}, not {value!r}",
                param=f"sim.{key}",
            )
        return text
    try:
        if isinstance(value, bool):
            raise TypeError
        if kind is int:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int | str):
                return int(value)
            raise TypeError
        if isinstance(value, int | float | str):
            number = float(value)
            if math.isfinite(number):
                return number
        raise TypeError
    except (TypeError, ValueError):
        raise SimOptionError(
            f"sim option {key!r} must be {'an integer' if kind is int else 'a number'}, not {value!r}",
            param=f"sim.{key}",
        ) from None


def _validate(o: SimOptions) -> None:
    def bad(key: str, why: str) -> SimOptionError:
        return SimOptionError(f"sim option {key!r} {why}, not {getattr(o, key)!r}", param=f"sim.{key}")

    for key in (*_RATE_FIELDS, "tail_prob"):
        if not 0.0 <= getattr(o, key) <= 1.0:
            raise bad(key, "must be between 0 and 1")
    for key in _NON_NEGATIVE:
        if getattr(o, key) < 0:
            raise bad(key, "must not be negative")
    for key in ("reply_tokens_min", "chunk_tokens"):
        if getattr(o, key) < 1:
            raise bad(key, "must be at least 1")
    if not o.reply_tokens_min <= o.reply_tokens_max <= MAX_REPLY_TOKENS:
        raise bad("reply_tokens_max", f"must be between reply_tokens_min and {MAX_REPLY_TOKENS}")
    if not 1 <= o.embedding_dim <= MAX_EMBEDDING_DIM:
        raise bad("embedding_dim", f"must be between 1 and {MAX_EMBEDDING_DIM}")
    if o.tail_factor < 1:
        raise bad("tail_factor", "must be at least 1")
    if o.tail_alpha <= 0:
        raise bad("tail_alpha", "must be positive")
    for key, choices in _CHOICES.items():
        value = getattr(o, key)
        if value is not None and value not in choices:
            raise bad(key, f"must be one of {', '.join(choices)}")


DEFAULT_OPTIONS = SimOptions()
