"""The coding-agent tests' working copy: ``hif init`` in a fresh directory, driven as a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import Hif


@pytest.fixture
def wc(tmp_path: Path) -> Hif:
    cwd = tmp_path / "wc"
    cwd.mkdir()
    h = Hif(cwd, tmp_path / "config")
    h.run("init")
    return h
