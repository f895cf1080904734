import pytest

from slipstream.cache.directives import CacheDirectives
from slipstream.errors import InvalidRequest


@pytest.mark.parametrize(
    ("headers", "read", "write", "ttl"),
    [
        ({}, True, True, None),
        ({"x-slipstream-cache": "bypass"}, False, False, None),
        ({"x-slipstream-cache": "refresh"}, False, True, None),
        ({"x-slipstream-cache": "no-store"}, True, False, None),
        ({"x-slipstream-cache": "refresh, no-store"}, False, False, None),
        ({"cache-control": "no-cache"}, False, True, None),
        ({"cache-control": "no-store, max-age=60"}, True, False, 60.0),
        ({"x-slipstream-cache-ttl": "30"}, True, True, 30.0),
    ],
)
def test_headers(headers, read, write, ttl):
    d = CacheDirectives.from_headers(headers)
    assert (d.read, d.write, d.ttl) == (read, write, ttl)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-slipstream-cache": "sometimes"},
        {"x-slipstream-cache-ttl": "soon"},
        {"x-slipstream-cache-ttl": "-5"},
    ],
)
def test_bad_directives_are_400s(headers):
    with pytest.raises(InvalidRequest) as info:
        CacheDirectives.from_headers(headers)
    assert info.value.param in ("x-slipstream-cache", "x-slipstream-cache-ttl")
