"""Git commit ids of imported history, looked up: ``hif show git:SHA`` (and a bare SHA) shows the
landing a commit became, through the derived index in ``.hif/search.sqlite``, and says whether
``hif export git`` writes that very commit back, checked here against the real export.

Histories are built by git (a merge with a side branch, an SSH-signed commit whose signature the
export cannot keep, so neither it nor what follows comes back with its id), imported with the ``hif`` command and
exported again; the claim is compared with the ids the export actually wrote, commit by commit.
Ambiguous prefixes need two ids sharing seven digits, which git cannot be asked for: those records
are written straight into a working copy's store, as an import writes them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_git_interop import ENV, HIF, Git, hjs, one_error_line

from hif.errors import Ambiguous, BadQuery, NotFound
from hif.mainline import LandedSession, LandingRecord, log_key
from hif.objects import EMPTY_TREE, FILE, Entry, encode, tree_bytes
from hif.repo import Repo
from hif.search import SearchIndex
from hif.session import Session, new_session_id
from hif.store.embedded import EmbeddedStore


def hif(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HIF, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def build(path: Path, home: Path) -> Git:
    """main: two commits, a merge of a two-commit topic branch, then an SSH-signed commit and one
    after it (a signature the export cannot keep: both come back with other ids)."""
    g = Git.init(path, home)
    g.write("a.txt", "one\n")
    g.commit("First")
    g.write("b.txt", "two\n")
    g.commit("Second\n\nWith a body.")
    g("checkout", "-q", "-b", "topic")
    g.write("t.txt", "side 1\n")
    g.commit("Side one")
    g.write("t.txt", "side 2\n")
    g.commit("Side two")
    g("checkout", "-q", "main")
    g.write("c.txt", "three\n")
    g.commit("Third")
    g.merge("topic", message="Merge the topic")
    key = home / "signing"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   capture_output=True)
    g("config", "gpg.format", "ssh")
    g("config", "user.signingkey", f"{key}.pub")
    g.write("d.txt", "signed\n")
    g("add", "-A")
    g.dates()
    g("commit", "-q", "-S", "-m", "Signed")
    assert "gpgsig" in g("cat-file", "-p", "HEAD")
    g.write("e.txt", "after\n")
    g.commit("After the signed one")
    return g


def exported_ids(tmp: Path, work: Path) -> set[str]:
    out = tmp / f"export-{work.name}"
    hjs(work, "export", "git", str(out))
    return set(subprocess.run(["git", "rev-list", "--branches"], cwd=out, capture_output=True, text=True,
                              check=True).stdout.split())


def where(g: Git) -> dict[str, tuple[int, int]]:
    """Each commit of main: (position it lands at, iteration it is in that landing; 0 = its own)."""
    chain = g("rev-list", "--first-parent", "--reverse", "main").split()
    out = {c: (i, 0) for i, c in enumerate(chain, 1)}
    for pos, c in enumerate(chain, 1):
        parents = g("rev-list", "--parents", "-n", "1", c).split()[1:]
        if len(parents) > 1:
            side = g("rev-list", "--reverse", "--topo-order", *parents[1:], f"^{parents[0]}").split()
            out.update({s: (pos, n) for n, s in enumerate(side, 1)})
    return out


def test_every_commit_shows_its_landing_and_whether_export_gives_it_back(tmp_path: Path) -> None:
    g = build(tmp_path / "src", tmp_path)
    hjs(tmp_path, "import", "git", "src", "work")
    work = tmp_path / "work"
    back = exported_ids(tmp_path, work)
    expected = where(g)
    assert len(expected) == len(g("rev-list", "main").split())
    claims = {}
    for commit, (position, iteration) in expected.items():
        doc = hjs(work, "show", f"git:{commit}")
        assert doc["position"] == position, commit
        assert doc["git"] == {"commit": commit, "position": position, "session": doc["session"]["id"],
                              "iteration": iteration, "exact": doc["git"]["exact"]}
        claims[commit] = doc["git"]["exact"]
    # the claim is exactly what the export did, commit by commit
    assert claims == {c: c in back for c in expected}
    # both kinds of claim occur: the export keeps some ids and loses others
    assert set(claims.values()) == {True, False}


def test_prefixes_cases_and_bare_ids(tmp_path: Path) -> None:
    g = build(tmp_path / "src", tmp_path)
    hjs(tmp_path, "import", "git", "src", "work")
    work = tmp_path / "work"
    second = g("rev-parse", ":/Second")
    side = g("rev-parse", ":/Side one")
    landing = hjs(work, "show", "2")
    for ref in (f"git:{second}", f"git:{second[:7]}", f"GIT:{second[:12].upper()}", second, second[:9],
                second[:7].upper()):
        if ref.removeprefix("GIT:").removeprefix("git:").isdigit():
            continue  # all digits: a position, as always
        doc = hjs(work, "show", ref)
        assert doc["session"]["id"] == landing["session"]["id"] and doc["git"]["commit"] == second, ref
    text = hif(work, "show", side[:10])
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"git commit {side}: iteration 1 of this landing; hif export git writes it"
                                  " back with this id\n"), text.stdout
    # a session id and a position still mean what they meant
    assert hjs(work, "show", landing["session"]["id"])["position"] == 2
    # hif log names each imported landing's commit
    log = hjs(work, "log")["landings"]
    assert [x["git"] for x in log] == g("rev-list", "--first-parent", "main").split()
    assert f"git {g('rev-parse', 'main')[:10]}" in hif(work, "log", "-n", "1").stdout


@pytest.mark.parametrize("ref, says", [
    ("git:123", "too short for a git commit id: give at least 7 hex digits"),
    ("git:abcdefg", "is not a git commit id"),
    ("git:abc def0", "is not a git commit id"),
    ("git:" + "a" * 65, "at most 64 hex digits"),
    ("git:", "give a git commit id"),
    ("git:../../etc", "is not a git commit id"),
    ("deadbeef00", "no git commit deadbeef00 in"),
    ("git:DEADBEEF", "no git commit deadbeef in"),
])
def test_bad_and_unknown_ids_are_one_line(tmp_path: Path, ref: str, says: str) -> None:
    g = Git.init(tmp_path / "src", tmp_path)
    g.write("a.txt", "a\n")
    g.commit("Only")
    hjs(tmp_path, "import", "git", "src", "work")
    one_error_line(hif(tmp_path / "work", "show", ref), says)
    doc = json.loads(hif(tmp_path / "work", "show", "--json", ref).stdout)
    assert says in doc["error"]["message"]


# -- the index itself: ambiguity and the exporter's rule, on records written as an import writes them


def commit_id(start: str, fill: str) -> str:
    return (start + fill * 40)[:40]


async def land_git(repo: Repo, position: int, metas: list[dict[str, Any]], sides: list[dict[str, Any]] = ()
                    ) -> list[str]:
    """Land one record at ``position`` with one session per entry of ``metas`` (its ``extra.git`` is
    the first entry, as only an import writes it), ``sides`` as the first session's checkpoints."""
    blob = await repo.objects.put_blob(f"content {position}\n".encode())
    files = {f"f{position}.txt": Entry(FILE, blob)}
    tree = await repo.objects.put_canonical(tree_bytes(files))
    # an imported history's times are its commits', long past (so a node's "recent landings" stay
    # the seeded ones when the UI tests share one node with these)
    now = 1_600_000_000.0 + position
    landed, sids = [], []
    for n, meta in enumerate(metas):
        sid = new_session_id(now + n)
        common = {"author": "Ada", "role": "imported", "time": now}
        events: list[dict[str, Any]] = [{"type": "start", **common, "goal": f"g{position}", "base": position - 1,
                                         "git": {"commit": meta["commit"]}}]
        for i, side in enumerate(sides if n == 0 else (), 1):
            events.append({"type": "checkpoint", **common, "note": f"side {i}", "iteration": i, "tree": tree,
                           "git": side})
        events.append({"type": "write", **common, "path": f"f{position}.txt", "kind": FILE, "blob": blob})
        for seq, e in enumerate(events):
            e["seq"] = seq
        snap = await repo.sessions.write_snapshot(Session(sid, f"g{position}", position - 1, "Ada", "imported", now,
                                                          events), files)
        landed.append(LandedSession(sid, snap, f"g{position}", "Ada", "imported", position - 1, dict(files)))
        sids.append(sid)
    parent = await repo.mainline.tree_at(position - 1) if position > 1 else EMPTY_TREE
    rec = LandingRecord(position=position, tree=tree, parent_tree=parent, time=now, sessions=landed,
                        extra={"git": metas[0]})
    await repo.store.create_all([(log_key(repo.prefix, position), rec.to_bytes())])
    await repo.rollups.extend(position)
    await repo.mainline.advance_hint(position)
    await repo.store.create_all([(repo.sessions.state_key(s.session), encode(
        {"state": "landed", "position": position, "snapshot": s.snapshot})) for s in landed])
    return sids


def git_meta(commit: str, parents: list[str], *, exact: bool | None = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"commit": commit, "parents": parents, "author": "Ada <a@x> 1 +0000",
                            "committer": "Ada <a@x> 1 +0000", "message": "m\n"}
    if exact is not None:
        meta["exact"] = exact
    return meta


A1, A2 = commit_id("abcdef1", "0"), commit_id("abcdef1", "1")  # share seven digits
B, C, D, E, F, S = (commit_id(x, x[0]) for x in ("b0b0b0b", "c0c0c0c", "d0d0d0d", "e0e0e0e", "f0f0f0f",
                                                   "5151515"))
OLD, ORPHAN = commit_id("0dd0dd0", "9"), commit_id("0bad0bad", "7")


async def fabricate(store_path: Path, name: str) -> None:
    store = EmbeddedStore(store_path, fsync=False)
    try:
        repo = Repo(store, name)
        await land_git(repo, 1, [git_meta(A1, [])])
        await land_git(repo, 2, [git_meta(A2, [A1])])
        await land_git(repo, 3, [git_meta(B, [A2, S])], sides=[git_meta(S, [A2])])  # a merge, its side commit
        await land_git(repo, 4, [git_meta(C, [B]), git_meta(D, [B])])  # two sessions: not rebuilt from git
        await land_git(repo, 5, [git_meta(E, [C])])  # its parent was not rebuilt: another id
        await land_git(repo, 6, [git_meta(OLD, [E], exact=None)])  # imported before the check
        await land_git(repo, 7, [git_meta(F, [ORPHAN])])  # a parent the history never had
        await land_git(repo, 8, [{"commit": "not hex", "parents": []}])  # ignored, never a crash
    finally:
        await store.close()


def test_ambiguous_prefixes_and_the_exporters_rule(tmp_path: Path) -> None:
    assert hif(tmp_path, "init", "w", "--name", "acme/made").returncode == 0
    work = tmp_path / "w"
    asyncio.run(fabricate(work / ".hif" / "store", "acme/made"))
    # the CLI: a shared prefix lists the commits it could mean, one more digit picks one
    bad = hif(work, "show", "git:ABCDEF1")
    one_error_line(bad, "abcdef1 is the start of 2 git commits in acme/made")
    assert f"{A1[:12]} (position 1)" in bad.stderr and f"{A2[:12]} (position 2)" in bad.stderr
    assert "give more digits" in bad.stderr
    assert hjs(work, "show", "git:abcdef10")["position"] == 1
    assert hjs(work, "show", "abcdef11")["position"] == 2
    # the index: what each commit maps to, and whether the export gives it back
    index = SearchIndex(work / ".hif" / "search.sqlite")
    try:
        prefix = "repos/acme/made/"
        found = {c: [(h.position, h.iteration, h.exact) for h in index.commits(prefix, c)]
                 for c in (A1, A2, B, S, C, D, E, OLD, F)}
        assert found == {
            A1: [(1, 0, True)], A2: [(2, 0, True)],
            B: [(3, 0, True)], S: [(3, 1, True)],  # a merge and the commit it brought in
            C: [(4, 0, False)], D: [],  # two sessions landed together: the export makes a new commit
            E: [(5, 0, False)],  # its parent comes back with another id, so does it
            OLD: [(6, 0, False)],  # imported before the check: not claimed
            F: [(7, 0, False)],  # a parent the history never had: the export gives it another
        }
        assert index.commits(prefix, "abcdef1") == index.commits(prefix, "ABCDEF1")
        assert len(index.commits(prefix, "abcdef1")) == 2
        for bad in ("abcdef", "xyzxyzx", "abcdef1 ", " abcdef1", "abc\ndef1", "a" * 65, ""):
            with pytest.raises(BadQuery):
                index.commits(prefix, bad)
    finally:
        index.close()
    # an index written before commits were indexed (schema 1) is started anew and filled again
    db = sqlite3.connect(work / ".hif" / "search.sqlite")
    db.execute("drop table commits")
    db.execute("update meta set value = '1' where key = 'schema'")
    db.commit()
    db.close()
    assert hjs(work, "show", "git:5151515")["git"] == {"commit": S, "position": 3, "iteration": 1, "exact": True,
                                                       "session": hjs(work, "show", "3")["session"]["id"]}


def test_one_commit_names_not_found_and_ambiguous() -> None:
    from hif.search import CommitHit, one_commit

    hits = [CommitHit(commit_id("abcdef1", str(n)), n + 1, "s", 0, True) for n in range(11)]
    with pytest.raises(NotFound, match="no git commit abcdef1 in acme/x"):
        one_commit([], "abcdef1", "acme/x")
    with pytest.raises(Ambiguous, match="more than 10 git commits") as e:
        one_commit(hits, "abcdef1", "acme/x")
    assert len(e.value.candidates) == 10 and e.value.candidates[0]["commit"] == hits[0].commit
    assert one_commit(hits[:1], "abcdef1", "acme/x") is hits[0]
