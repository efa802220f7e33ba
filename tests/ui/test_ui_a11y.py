"""Every kind of page fits a phone (390 px) and a desktop (1280 px) without a horizontal scroll bar,
and axe-core (npm, pinned; ``scripts/install-test-deps.sh`` fetches it) finds no serious or critical
violation on it, in the light and the dark colour scheme.

One browser context per scheme, logged in as a site admin who is also a member everywhere, so every
page shows the most it can (e-mail addresses of imported authors included). Each page is loaded once
per scheme: axe runs at 1280 px, then the viewport narrows to 390 px and the width is checked again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_seed import IMPORTED, PASSWORD, PRIVATE, PUBLIC, Seeded, landed_session

AXE = Path(__file__).resolve().parents[2] / ".cache" / "npm" / "axe-core" / "axe.min.js"
WIDTHS = (1280, 390)
SCHEMES = ("light", "dark")
ADMIN = "a11y-root"

# page kind -> its address in the seeded node (the names in braces: see ``address``)
PAGES = {
    "home": "/",
    "search": "/search?q=acme",
    "search-sessions": "/search?q=spinner",
    "login": "/login",
    "account": "/account",
    "org": "/orgs/acme",
    "federation": "/federation",
    "import": "/import",
    "not-found": "/acme/nothing-here",
    "repository": "/{public}",
    "tree": "/{public}/tree/src/widgets",
    "file": "/{public}/blob/src/widgets/core.py",
    "blame": "/{public}/blame/src/widgets/core.py",
    "sessions": "/{public}/sessions",
    "session": "/{public}/sessions/{spinner}",
    "session-split": "/{public}/sessions/{spinner}?view=split",
    "session-iterations": "/{public}/sessions/{spinner}?a=1&b=2",
    "session-open": "/{public}/sessions/{open}",
    "session-file-diff": "/{public}/sessions/{spinner}/diff/src/widgets/core.py?view=split",
    "settings": "/{public}/settings",
    "new-repository": "/new",
    "compare": "/{public}/compare/0...3",
    "compare-split": "/{public}/compare/1...3?view=split",
    "markdown-file": "/{public}/blob/docs/guide.md",
    "offer-form": "/{public}/sessions/{open}/offer",
    "offers": "/{public}/offers",
    "private": "/{private}",
    "imported": "/{imported}",
    "imported-file": "/{imported}/blob{loader}",
    "imported-blame": "/{imported}/blame{loader}",
    "imported-sessions": "/{imported}/sessions",
    "imported-session": "/{imported}/sessions/{imported_2}",
    "imported-session-split": "/{imported}/sessions/{imported_2}?view=split",
    "imported-merge": "/{imported}/sessions/{imported_3}?a=1&b=2",
}


def address(kind: str, d: Seeded) -> str:
    """The page's path, its braces filled from the seeded data (session ids read only when named)."""
    return PAGES[kind].format(
        public=PUBLIC, private=PRIVATE, imported=IMPORTED, spinner=d.sessions["Add a spinner widget"],
        open=d.open_session, imported_2=landed_session(d, IMPORTED, 2) if "imported_2" in PAGES[kind] else "",
        imported_3=landed_session(d, IMPORTED, 3) if "imported_3" in PAGES[kind] else "",
        loader="/src/terminal_toolkit_configuration_loader_and_friends/loader.py")


# the outermost elements (or their text) reaching past the viewport outside any box that scrolls
# or clips them: the culprits, named in the failure
OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  const clipped = el => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  const reach = el => {
    const r = el.getBoundingClientRect();
    return Math.max(r.right, r.left + el.scrollWidth);
  };
  const wide = el => el && el !== document.body && reach(el) > width + 1 && !clipped(el);
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
  const out = [...document.body.querySelectorAll('*')].filter(el => wide(el) && !wide(el.parentElement))
    .slice(0, 8).map(el => `${name(el)} reaches ${Math.round(reach(el))}px`);
  return [`page is ${document.documentElement.scrollWidth}px wide in ${width}px`, ...out];
}"""

AXE_JS = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v =>
    `${v.impact} ${v.id}: ${v.help} — ` + v.nodes.slice(0, 4).map(n => n.target.join(' ')).join(' | '));
}"""


@pytest.fixture(scope="module")
def contexts(browser: Any, seeded: Seeded) -> Iterator[dict[str, Any]]:
    """One context per colour scheme, logged in as a site admin; CSP bypassed only so that the
    axe script can be injected."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run scripts/install-test-deps.sh (make test does)")
    forge = seeded.forge
    if f'"{ADMIN}"' not in forge.micelio("admin", "user", "list", "--json").stdout:
        forge.micelio("admin", "user", "create", ADMIN, "--admin", "--password-stdin", input=PASSWORD + "\n")
    out: dict[str, Any] = {}
    state = None
    try:
        for scheme in SCHEMES:
            ctx = browser.new_context(viewport={"width": WIDTHS[0], "height": 800}, color_scheme=scheme,
                                      base_url=forge.url, bypass_csp=True, storage_state=state)
            ctx.set_default_timeout(30_000)
            out[scheme] = ctx
            if state is None:
                pg = ctx.new_page()
                pg.goto("/login")
                pg.get_by_label("User name").fill(ADMIN)
                pg.get_by_label("Password").fill(PASSWORD)
                pg.get_by_role("button", name="Log in").click()
                pg.wait_for_url("**/")
                pg.close()
                state = ctx.storage_state()
        yield out
    finally:
        for ctx in out.values():
            ctx.close()


def check_page(ctx: Any, seeded: Seeded, path: str, scheme: str) -> list[str]:
    """Load ``path`` once: axe and the width at 1280 px, then the width at 390 px."""
    problems: list[str] = []
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.set_viewport_size({"width": WIDTHS[0], "height": 800})
        response = pg.goto(path)
        status = response.status if response is not None else 0
        if status != (404 if path == PAGES["not-found"] else 200):
            problems.append(f"{scheme}: {path} answered {status}, not the page")
        pg.add_script_tag(path=str(AXE))
        problems += [f"{scheme}: {v}" for v in pg.evaluate(AXE_JS)]
        for width in WIDTHS:
            pg.set_viewport_size({"width": width, "height": 800})
            problems += [f"{scheme} {width}px: {w}" for w in pg.evaluate(OVERFLOW_JS)]
    finally:
        pg.close()
    return problems + [f"{scheme}: script error {e}" for e in errors]


@pytest.mark.parametrize("kind", list(PAGES))
def test_page_fits_the_screen_and_passes_axe(kind: str, contexts: dict[str, Any], seeded: Seeded) -> None:
    path = address(kind, seeded)
    problems = [p for scheme, ctx in contexts.items() for p in check_page(ctx, seeded, path, scheme)]
    assert not problems, f"{kind} ({path}):\n" + "\n".join(problems)
