"""Fixtures of the web UI's tests: one seeded node for the whole run, and a headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge import start_forge
from ui_seed import CHROMIUM, CHROMIUM_ARGS, FED_ENV, Seeded, seed

from ui.web import HTMX


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A ``micelio serve`` on loopback with the data of ``ui_seed``; shared by every UI test, which
    only add to it (a token, an event) and never change what another test looks at."""
    # loopback peers allowed: test_ui_mirror follows this node from a second one
    forge = start_forge(tmp_path_factory.mktemp("ui-node"), env=FED_ENV)
    try:
        yield seed(forge)
    finally:
        forge.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one module: Playwright's sync API keeps an event loop running in this
    thread while it lives, which other modules' ``asyncio.run`` must not meet."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-test-deps.sh (make test does)")
    if not HTMX.exists():
        pytest.fail(f"{HTMX} is missing: run scripts/fetch-htmx.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, seeded: Seeded, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280×800; a script error or a console error (a
    refused resource, a CSP violation) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=seeded.forge.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text)
          if m.type == "error" and "Failed to load resource" not in m.text else None)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, errors
