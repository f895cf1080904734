"""Every test runs in its own empty working directory, so default data folders (.slipstream/) never land in
the checkout and tests never see each other's files."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
