from slipstream.cache.key import cache_key

BASE = {"model": "m", "messages": [{"role": "user", "content": "Hi  there"}], "temperature": 0.5}


def test_key_ignores_object_key_order():
    reordered = {"temperature": 0.5, "messages": [{"content": "Hi  there", "role": "user"}], "model": "m"}
    assert cache_key("ns", "chat", BASE) == cache_key("ns", "chat", reordered)


def test_key_ignores_stream_user_and_metadata():
    other = {
        **BASE,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
        "metadata": {"a": "b"},
    }
    assert cache_key("ns", "chat", BASE) == cache_key("ns", "chat", other)


def test_key_changes_with_everything_that_changes_the_answer():
    base = cache_key("ns", "chat", BASE)
    variants = [
        {**BASE, "model": "m2"},
        {**BASE, "temperature": 0.6},
        {**BASE, "seed": 1},
        {**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**BASE, "messages": [{"role": "user", "content": "Hi there"}]},
        {**BASE, "some_provider_param": 3},  # unknown fields are in the key
    ]
    keys = {cache_key("ns", "chat", v) for v in variants}
    assert base not in keys and len(keys) == len(variants)


def test_namespace_and_kind_scope_the_key():
    assert cache_key("a", "chat", BASE) != cache_key("b", "chat", BASE)
    assert cache_key("a", "chat", BASE).startswith("a:chat:")
    assert cache_key("a", "chat", BASE) != cache_key("a", "embed", BASE)


def test_whitespace_normalisation_is_opt_in():
    spaced = {**BASE, "messages": [{"role": "user", "content": "  Hi \n there "}]}
    assert cache_key("ns", "chat", spaced) != cache_key("ns", "chat", BASE)
    assert cache_key("ns", "chat", spaced, normalize=True) == cache_key("ns", "chat", BASE, normalize=True)
    parts = {**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": " Hi   there"}]}]}
    same_parts = {**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]}
    assert cache_key("ns", "chat", parts, normalize=True) == cache_key(
        "ns", "chat", same_parts, normalize=True
    )
