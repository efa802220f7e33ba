"""Fixtures of the security suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from forge import Forge, start_forge


@pytest.fixture(scope="module")
def shared_forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """One node for a whole test module whose tests each use their own repositories (starting a
    node takes seconds; the attacks do not depend on a fresh one)."""
    forge = start_forge(tmp_path_factory.mktemp("shared") / "forge")
    try:
        yield forge
    finally:
        forge.stop()
