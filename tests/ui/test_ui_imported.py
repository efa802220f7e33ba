"""Imported git history as the web UI shows it: authors by name (their e-mail addresses only for the
repository's members), the commit message as Markdown with its line breaks, the git commit id, the
role "imported"; and repositories imported before that role shown the same way."""

from __future__ import annotations

import asyncio
import html
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from test_ui_http import get, logged_in
from ui_seed import COMMIT_BODY, IMPORTED, LONG_EMAIL, LONG_NAME, Seeded, landed_session

from hif.mainline import LandedSession, LandingRecord, log_key
from hif.objects import EMPTY_TREE, FILE, Entry, encode, tree_bytes
from hif.repo import Repo
from hif.session import Session, new_session_id
from hif.store.embedded import EmbeddedStore

SUBJECT = "Read_every_configuration_file_only_once_instead_of_twice_when_loading"
OLD = "acme/old-import"
OLD_WHO = "Grace Hopper <grace.hopper@navy.example.mil>"
OLD_SHA = "c0ffee" * 6 + "abcd"
OLD_BODY = "Keep the compiler's tables\nin one place.\n\n- **faster** lookups"


def viewers(seeded: Seeded) -> dict[str, httpx.Client | None]:
    """Nobody logged in, a user with no role, a member (ana: maintainer of acme)."""
    return {"anonymous": None, "stranger": logged_in(seeded, "stranger"), "member": logged_in(seeded)}


def test_imported_commits_show_names_messages_ids_and_role(seeded: Seeded) -> None:
    sid = landed_session(seeded, IMPORTED, 2)
    sha = seeded.commits[SUBJECT]
    pages = [f"/{IMPORTED}", f"/{IMPORTED}/sessions", f"/{IMPORTED}/sessions/{sid}",
             f"/{IMPORTED}/blob/src/terminal_toolkit_configuration_loader_and_friends/loader.py",
             f"/{IMPORTED}/blame/src/terminal_toolkit_configuration_loader_and_friends/loader.py",
             f"/{IMPORTED}/sessions/{landed_session(seeded, IMPORTED, 3)}", "/"]
    for who, client in viewers(seeded).items():
        for path in pages:
            r = get(seeded, path, client)
            assert r.status_code == 200, (who, path, r.status_code)
            text = html.unescape(r.text)
            if path == "/":  # every repository's landings: only the address is checked there
                assert LONG_EMAIL not in text, who
                continue
            assert "role-human" not in text and "role-agent" not in text, (who, path)
            if "/blame/" not in path:
                assert "role-imported" in text and LONG_NAME in text, (who, path)
            if who != "member":  # the address: only for members
                assert LONG_EMAIL not in text, (who, path)
        page = html.unescape(get(seeded, f"/{IMPORTED}/sessions/{sid}", client).text)
        # the body, as Markdown, each line break kept; no decision made up from it
        assert "<strong>once</strong>" in page and "<code>Config</code>" in page and "<li>" in page
        assert "Line breaks stay<br>" in page.replace("<br />", "<br>")
        assert "Decided" not in page and "message of git commit" not in page and "0 decisions" in page
        assert "records no decision" not in page  # a commit has none to miss
        assert sha in page  # the commit id, the same one hif export git writes back
        assert (f"{LONG_NAME} <{LONG_EMAIL}>" in page) == (who == "member")
    # the role is one to filter by
    rows = get(seeded, f"/{IMPORTED}/sessions?role=imported").text
    assert rows.count('class="session-row"') == 3, rows
    assert COMMIT_BODY.splitlines()[0] in html.unescape(get(seeded, f"/{IMPORTED}/sessions/{sid}").text)


async def _old_import(store_path: Path) -> str:
    """One commit landed the way ``hif import git`` wrote it before the role ``imported``: author
    ``Name <email>``, role ``human``, the body as a decision "the message of git commit …"."""
    store = EmbeddedStore(store_path, fsync=False)
    try:
        repo = Repo(store, OLD)
        blob = await repo.objects.put_blob(b"tables\n")
        changes: dict[str, Entry | None] = {"tables.txt": Entry(FILE, blob)}
        tree = await repo.objects.put_canonical(tree_bytes({"tables.txt": Entry(FILE, blob)}))
        now = time.time()
        sid = new_session_id(now)
        common = {"author": OLD_WHO, "role": "human", "time": now}
        events = [{"type": "start", **common, "goal": "Compile the tables", "base": 0, "git": {"commit": OLD_SHA}},
                  {"type": "decide", **common, "decision": OLD_BODY, "why": f"the message of git commit {OLD_SHA}",
                   "alternatives": []},
                  {"type": "write", **common, "path": "tables.txt", "kind": FILE, "blob": blob}]
        for seq, e in enumerate(events):
            e["seq"] = seq
        snap = await repo.sessions.write_snapshot(Session(sid, "Compile the tables", 0, OLD_WHO, "human", now, events),
                                                  changes)
        rec = LandingRecord(position=1, tree=tree, parent_tree=EMPTY_TREE, time=now,
                            sessions=[LandedSession(sid, snap, "Compile the tables", OLD_WHO, "human", 0, changes)],
                            extra={"git": {"commit": OLD_SHA, "parents": [], "author": f"{OLD_WHO} {int(now)} +0000",
                                           "committer": f"{OLD_WHO} {int(now)} +0000",
                                           "message": f"Compile the tables\n\n{OLD_BODY}\n"}})
        await store.create_all([(log_key(repo.prefix, 1), rec.to_bytes())])
        await repo.rollups.extend(1)
        await repo.mainline.advance_hint(1)
        await store.create_all([(repo.sessions.state_key(sid), encode({"state": "landed", "position": 1,
                                                                        "snapshot": snap}))])
        return sid
    finally:
        await store.close()


def test_history_imported_the_old_way_reads_the_same(seeded: Seeded) -> None:
    forge = seeded.forge
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": OLD, "private": False})
    assert r.status_code == 201, r.data
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may run an event loop in this thread
        sid = pool.submit(asyncio.run, _old_import(Path(forge.store))).result()
    for who, client in viewers(seeded).items():
        text = html.unescape(get(seeded, "/", client).text)
        assert "Grace Hopper" in text and "grace.hopper@navy.example.mil" not in text, who
        for path in (f"/{OLD}", f"/{OLD}/sessions", f"/{OLD}/sessions/{sid}", f"/{OLD}/blob/tables.txt"):
            text = html.unescape(get(seeded, path, client).text)
            assert "Grace Hopper" in text and "role-imported" in text and "role-human" not in text, (who, path)
            assert ("grace.hopper@navy.example.mil" in text) == (who == "member"), (who, path)
        page = html.unescape(get(seeded, f"/{OLD}/sessions/{sid}", client).text)
        assert "Decided" not in page and "message of git commit" not in page and "0 decisions" in page
        assert "Keep the compiler's tables<br>" in page.replace("<br />", "<br>") and "<strong>faster</strong>" in page
        assert OLD_SHA in page
