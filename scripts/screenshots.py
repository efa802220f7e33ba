"""Screenshots of the web UI for the README: ``.venv/bin/python scripts/screenshots.py``.

Starts a node on loopback over a temporary store, seeds it with the UI tests' data
(``tests/ui/ui_seed.py``), and photographs the main pages with Debian's Chromium through Playwright
into ``docs/screenshots/`` (light theme at 1280 px, two phone-width shots and one dark one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "ui")]

from forge import start_forge  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from ui_seed import CHROMIUM, CHROMIUM_ARGS, IMPORTED, PASSWORD, PUBLIC, landed_session, seed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        forge = start_forge(Path(tmp) / "node")
        try:
            data = seed(forge)
            spinner = data.sessions["Add a spinner widget"]
            shots = {
                "home": "/",
                "repository": f"/{PUBLIC}",
                "file": f"/{PUBLIC}/blob/src/widgets/core.py",
                "blame": f"/{PUBLIC}/blame/src/widgets/core.py",
                "sessions": f"/{PUBLIC}/sessions?role=agent",
                "session": f"/{PUBLIC}/sessions/{spinner}",
                "session-diff": f"/{PUBLIC}/sessions/{spinner}?view=split#changes",
                "session-imported": f"/{IMPORTED}/sessions/{landed_session(data, IMPORTED, 2)}",
            }
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                for scheme, width, height, names in (("light", 1280, 860, list(shots)),
                                                     ("light", 390, 844, ["session", "session-imported"]),
                                                     ("dark", 1280, 860, ["session"])):
                    context = browser.new_context(viewport={"width": width, "height": height},
                                                  color_scheme=scheme, base_url=forge.url)
                    page = context.new_page()
                    page.goto("/login")
                    page.get_by_label("User name").fill("ana")
                    page.get_by_label("Password").fill(PASSWORD)
                    page.get_by_role("button", name="Log in").click()
                    page.wait_for_url("**/")
                    for name in names:
                        page.goto(shots[name])
                        suffix = "-phone" if width < 600 else ("-dark" if scheme == "dark" else "")
                        target = args.out / f"{name}{suffix}.png"
                        page.screenshot(path=str(target))
                        print(target.relative_to(ROOT) if target.is_relative_to(ROOT) else target)
                    context.close()
                browser.close()
        finally:
            forge.stop()


if __name__ == "__main__":
    main()
