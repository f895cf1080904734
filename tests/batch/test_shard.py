"""--shard i/n: a stable split of custom_ids, every id in exactly one shard."""

from __future__ import annotations

import pytest

from slipstream.batch import Shard


def test_parse():
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="expected i/n"):
            Shard.parse(bad)


def test_every_id_lands_in_exactly_one_shard_and_shards_are_balanced():
    ids = [f"request-{i}" for i in range(3000)]
    shards = [Shard(i, 3) for i in (1, 2, 3)]
    owners = [[s for s in shards if s.selects(custom_id)] for custom_id in ids]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(owner[0] == s for owner in owners) for s in shards]
    assert all(900 < size < 1100 for size in sizes), sizes


def test_the_split_is_stable_across_processes_and_versions():
    # Pinned: a change of hash would send a resumed shard's lines to other shards.
    assert [i for i in (1, 2, 3, 4) if Shard(i, 4).selects("alpha")] == [3]
    assert [i for i in (1, 2, 3, 4) if Shard(i, 4).selects("line-17")] == [3]
    assert [i for i in (1, 2, 3, 4) if Shard(i, 4).selects("x")] == [4]
    assert Shard(1, 1).selects("anything")
