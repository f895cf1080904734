"""The package's public surface: one import path, a sorted ``__all__``."""

import slipstream.limits as limits


def test_public_names_are_sorted_and_importable():
    assert limits.__all__ == sorted(limits.__all__, key=lambda name: (not name.isupper(), name))
    for name in limits.__all__:
        assert getattr(limits, name) is not None
