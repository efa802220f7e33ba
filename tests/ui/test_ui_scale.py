"""Pages cost what they show, not the size of the log: the app runs in-process over a store that
counts its reads, on a repository of 100,000 landings (the size the web UI's issue names)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from hif.mainline import LandedSession, LandingRecord
from hif.objects import EMPTY_TREE, Entry, digest
from hif.repo import Repo
from hif.store.embedded import EmbeddedStore
from node.accounts import Accounts
from node.authdb import AuthDB
from node.composition import create_app
from node.config import Config
from ui import sessions as session_pages
from ui.render import SHOW_MAX, file_view

N = 100_000
FAKE = Entry("f", digest(b"x"))


class CountingStore(EmbeddedStore):
    """Counts reads of landing records (``get`` and ``head`` of ``log/`` keys)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.reads: Counter[str] = Counter()

    def _count(self, key: str) -> None:
        if "/log/" in key:
            self.reads["log"] += 1

    async def get(self, key: str) -> bytes:
        self._count(key)
        return await super().get(key)

    async def head(self, key: str):  # type: ignore[no-untyped-def]
        self._count(key)
        return await super().head(key)


async def fill(repo: Repo, n: int) -> None:
    for pos in range(1, n + 1):
        landed = LandedSession(f"{pos:016d}".replace("0", "a").replace("1", "b").replace("8", "c").replace("9", "d"),
                               digest(b"snap"), f"goal {pos}", "rare" if pos % 1000 == 0 else "bot", "agent",
                               pos - 1, {f"f/{pos}/a.txt": FAKE})
        await repo.mainline.append(LandingRecord(pos, EMPTY_TREE, EMPTY_TREE, float(pos), [landed]))
        await repo.rollups.extend(pos)
    await repo.mainline.advance_hint(n)


@pytest.mark.slow
def test_sessions_list_over_a_long_log_reads_a_page(tmp_path: Path) -> None:
    async def main() -> None:
        store = CountingStore(tmp_path / "store", create=True, fsync=False)
        accounts = Accounts(AuthDB(store, tmp_path / "setup"))
        await accounts.create_user("owner", "pw")
        await accounts.register_repo("owner/long", private=False, owner_user=None)
        repo = Repo(store, "owner/long")
        await repo.create()
        await fill(repo, N)
        # no background search catch-up: its reads of the log are not the pages' (counted here)
        app = create_app(Config(store=str(tmp_path / "store"), cache_dir=tmp_path / "cache", access_log=False,
                                search_poll=0),
                         store=store)
        async with app.test_app() as test_app:
            client = test_app.test_client()

            async def reads(url: str) -> tuple[int, str]:
                app.extensions["micelio"]._repos.clear()  # no record cache from earlier requests
                store.reads.clear()
                r = await client.get(url)
                assert r.status_code == 200, url
                return store.reads["log"], await r.get_data(as_text=True)

            n, page = await reads("/owner/long/sessions")
            assert page.count('class="session-row"') == session_pages.PAGE and f"goal {N}<" in page
            assert n <= session_pages.PAGE + 10, n  # the page, plus finding the head
            nxt = re.search(r'href="(/owner/long/sessions\?[^"]*before=\d+)"', page)
            assert nxt is not None
            n, page = await reads(nxt.group(1).replace("&amp;", "&"))
            assert f"goal {N - session_pages.PAGE}<" in page and n <= session_pages.PAGE + 10

            # a filter that rarely matches: bounded by the budget, with a cursor to keep looking
            n, page = await reads("/owner/long/sessions?author=rare")
            assert page.count('class="session-row"') == 2  # N and N - 1000, found within the budget
            assert n <= session_pages.BUDGET + 10 and "Keep looking" in page
            n, page = await reads(f"/owner/long/sessions?author=nobody&before={N // 2}")
            assert n <= session_pages.BUDGET + 10 and "Examined" in page

            # a path filter goes through the rollups: a few reads, not the log
            n, page = await reads("/owner/long/sessions?path=f/1234")
            assert page.count('class="session-row"') == 1 and "goal 1234<" in page
            assert n <= 10, n

            # the repository page and a deep position
            n, _ = await reads("/owner/long")
            assert n <= 25, n
            n, _ = await reads("/owner/long?at=17")
            assert n <= 25, n

    asyncio.run(main())


def test_file_view_shows_the_first_megabyte() -> None:
    data = b"".join(b"line %d\n" % i for i in range(200_000))
    assert len(data) > SHOW_MAX
    view = file_view(data, "big.txt")
    assert view.truncated and not view.binary and not view.highlighted
    shown = sum(len(str(x)) + 1 for x in view.lines)
    assert SHOW_MAX - 20 < shown <= SHOW_MAX
    assert file_view(b"\x00\x01binary", "x.bin").binary
