"""The README shows the screenshots of the main pages that ``scripts/screenshots.py`` saves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN_PAGES = {"home", "repository", "file", "blame", "sessions", "session", "session-diff", "session-dark",
              "session-phone"}


def test_readme_shows_every_screenshot_of_the_main_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Web UI", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"docs/screenshots/([\w-]+)\.png", section)
    saved = {p.stem for p in (ROOT / "docs" / "screenshots").glob("*.png")}
    assert set(shown) >= MAIN_PAGES, MAIN_PAGES - set(shown)
    assert set(shown) == saved, (set(shown) ^ saved)  # nothing missing, nothing stale
    for name in shown:
        data = (ROOT / "docs" / "screenshots" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name  # a real picture
