"""Per-request cache control, from headers (gateway) or arguments (SDK).

Headers: ``x-slipstream-cache: bypass | refresh | no-store`` (comma-separated), ``x-slipstream-cache-ttl: <s>``,
and the standard ``Cache-Control: no-cache | no-store | max-age=<s>``.

- ``bypass``: neither read nor write the cache.
- ``refresh`` (``no-cache``): skip the read, call upstream, store the fresh answer.
- ``no-store``: may be answered from the cache, but a fresh answer is not stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidRequest

__all__ = ["DEFAULT_DIRECTIVES", "CacheDirectives"]

_MAX_TTL = 10 * 365 * 24 * 3600.0


class CacheDirectives:
    __slots__ = ("read", "ttl", "write")

    def __init__(self, *, read: bool = True, write: bool = True, ttl: float | None = None) -> None:
        self.read = read
        self.write = write
        self.ttl = ttl

    @property
    def bypass(self) -> bool:
        return not self.read and not self.write

    @classmethod
    def parse(cls, mode: str | None = None, ttl: float | str | None = None) -> CacheDirectives:
        """From the SDK argument / header value: ``"bypass"``, ``"refresh"``, ``"no-store"`` (comma-separated)."""
        read = write = True
        if mode:
            for token in mode.lower().split(","):
                token = token.strip()
                if token in ("bypass", "off", "no-cache-no-store"):
                    read = write = False
                elif token in ("refresh", "no-cache"):
                    read = False
                elif token == "no-store":
                    write = False
                elif token in ("", "on", "default"):
                    pass
                else:
                    raise InvalidRequest(
                        f"unknown cache directive {token!r} (use bypass, refresh or no-store)",
                        param="x-slipstream-cache",
                    )
        return cls(read=read, write=write, ttl=_ttl(ttl) if ttl is not None else None)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CacheDirectives:
        mode = headers.get("x-slipstream-cache")
        ttl: str | None = headers.get("x-slipstream-cache-ttl")
        control = headers.get("cache-control")
        if control:
            extra = []
            for token in control.lower().split(","):
                token = token.strip()
                if token in ("no-cache", "no-store"):
                    extra.append(token)
                elif token.startswith("max-age=") and ttl is None:
                    ttl = token[8:]
            if extra:
                mode = ",".join([mode, *extra] if mode else extra)
        if mode is None and ttl is None:
            return DEFAULT_DIRECTIVES
        return cls.parse(mode, ttl)


def _ttl(value: float | str) -> float:
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"cache ttl must be a number of seconds, got {value!r}", param="x-slipstream-cache-ttl"
        ) from None
    if not 0 < ttl <= _MAX_TTL:
        raise InvalidRequest(
            "cache ttl must be positive and at most ten years", param="x-slipstream-cache-ttl"
        )
    return ttl


DEFAULT_DIRECTIVES = CacheDirectives()
