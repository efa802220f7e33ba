"""Seeds for the simulation: a fixed set in CI, or ``--sim-seeds N`` for seeds 0..N-1 (``make sim``)."""

from __future__ import annotations

import pytest

FIXED_SEEDS = list(range(20))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=0,
        metavar="N",
        help="run the deterministic simulation for seeds 0..N-1 (0: the fixed CI set)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        n = metafunc.config.getoption("--sim-seeds")
        seeds = list(range(n)) if n > 0 else FIXED_SEEDS
        metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])
