"""``--shard i/n``: which custom_ids one of n processes takes, by a stable hash, so they split one file.

The hash is BLAKE2b of the custom_id's UTF-8 bytes (never Python's ``hash``, which is salted per process): every
process on every machine agrees on the split without talking to the others, and a resumed shard takes the same
lines as before. Shards are numbered from 1 (``1/3``, ``2/3``, ``3/3``), as in pytest-split and Playwright.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard"]


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 1-based
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected i/n with 1 <= i <= n")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/3"`` -> ``Shard(2, 3)``; anything else is a ``ValueError`` saying what is expected."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError:
            raise ValueError(f"expected i/n with 1 <= i <= n (e.g. 1/4), got {text!r}") from None

    def selects(self, custom_id: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
