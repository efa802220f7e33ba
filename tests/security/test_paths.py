"""Content that harms whoever checks it out (issue 14, items 1-4), refused at every edge.

Each class goes through the real interfaces: HTTP to a running node (write events and one-request
landings), the ``hif`` CLI as a subprocess, git import from a real git repository, a landing over a
store, and a mirror applying a hostile peer's landing fetched over HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from forge import Forge, start_forge

from federation.envelope import Landing
from federation.mirror import apply as mirror_apply
from federation.mirror import mirror_repo
from federation.net import Fetcher
from federation.settings import FedSettings
from hif.errors import CorruptObject, HifError, InvalidPath
from hif.landing import land
from hif.mainline import LandedSession, LandingRecord
from hif.objects import (
    DIR,
    EMPTY_TREE,
    FILE,
    LINK,
    Entry,
    blob_bytes,
    digest,
    encode,
    pack,
    tree_bytes,
)
from hif.repo import Repo
from hif.store import EmbeddedStore

NFC_E = unicodedata.normalize("NFC", "\u00e9")
NFD_E = unicodedata.normalize("NFD", "\u00e9")

# Every spelling a file system folds onto .git or .hif, or that is unsafe on some file system. None
# of these was refused before (only '.hif' at the root, exactly, and NUL were).
BAD_PATHS = [
    ".git/config",
    "sub/.git/config",
    ".GIT/config",
    "deep/er/.Git/hooks/pre-commit",
    ".git./hooks/x",
    ".git../x",
    ".git /config",
    ".GIT. ./config",
    ".git . /config",
    "GIT~1/config",
    "git~1/config",
    "a/GIT~2/config",
    ".git::$INDEX_ALLOCATION/config",
    ".git:stream/config",
    "file::$DATA",
    "a/b:$DATA",
    ".g\u200cit/config",
    ".gi\u200dt/config",
    "\u200e.git/config",
    ".git\u200f/config",
    ".g\u202ait/config",
    ".git\u202e/config",
    ".\u206agit/config",
    ".git\u206f/config",
    "\ufeff.git/config",
    "a/.hif/config.json",
    ".HIF/config.json",
    ".hif./x",
    "HIF~1/x",
    "a\\.git\\config",
    "dir\\file",
    "tab\there",
    "new\nline",
    "bell\x07",
    "del\x7f",
    "esc\x1b[31m",
]
SYMLINK_NAMES = [".gitmodules", "sub/.gitattributes", ".GITIGNORE", ".mailmap", ".gitmodules. ",
                 "GITMOD~1", ".git\u200cmodules"]
LONG_PATHS = [
    "x" * 256,
    "dir/" + "y" * 300 + ".txt",
    "\u00e9" * 128,  # 128 characters, 256 bytes
    "/".join(["d" * 200] * 21),  # every name fine, the path 4,220 bytes
    "/".join(["abc"] * 1100),  # 4,399 bytes of short names
]


# -- a node shared by the module's many spellings ------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    os.environ.setdefault("HIF_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "hif-config"))
    f = start_forge(tmp_path_factory.mktemp("forge"))
    try:
        yield f
    finally:
        f.stop()


_repos = iter(range(1_000_000))


def new_repo(f: Forge) -> str:
    name = f"acme/r{next(_repos)}"
    r = f.api("POST", "/api/v1/repos", f.admin_token, {"name": name})
    assert r.status_code == 201, r.data
    return name


def put(f: Forge, repo: str, *canonical: bytes) -> list[bytes]:
    r = f.api("POST", f"/api/v1/repos/{repo}/objects/put", f.admin_token,
              {"objects": [pack(c) for c in canonical]})
    assert r.status_code == 200, r.data
    return r.data["ids"]


def write(path: str, oid: bytes, kind: str = FILE) -> dict[str, Any]:
    return {"type": "write", "path": path, "kind": kind, "blob": oid, "role": "agent"}


def land_whole(f: Forge, repo: str, objects: list[bytes], events: list[dict[str, Any]]) -> Any:
    return f.api("POST", f"/api/v1/repos/{repo}/land", f.admin_token,
                 {"goal": "hostile", "role": "agent", "objects": [pack(c) for c in objects],
                  "events": events})


def start(f: Forge, repo: str) -> str:
    r = f.api("POST", f"/api/v1/repos/{repo}/sessions", f.admin_token, {"goal": "g", "role": "agent"})
    assert r.status_code == 201, r.data
    return r.data["id"]


def events(f: Forge, repo: str, sid: str, evs: list[dict[str, Any]]) -> Any:
    return f.api("POST", f"/api/v1/repos/{repo}/sessions/{sid}/events", f.admin_token, {"events": evs})


def head(f: Forge, repo: str) -> int:
    return f.api("GET", f"/api/v1/repos/{repo}/head", f.admin_token).data["position"]


def refused(r: Any, *says: str) -> str:
    """A clear refusal: a 4xx status and a CBOR error body whose message says ``says``."""
    assert 400 <= r.status_code < 500, (r.status_code, r.data)
    message = r.data["message"]
    for s in says:
        assert s in message, message
    return message


# -- 1, 2: unsafe and over-long paths over HTTP ----------------------------------------------------


@pytest.mark.parametrize("path", BAD_PATHS + LONG_PATHS)
def test_api_refuses_unsafe_path_in_a_write_event(node: Forge, path: str) -> None:
    repo = new_repo(node)
    (oid,) = put(node, repo, blob_bytes(b"[core]\n\tfsmonitor = touch /tmp/pwned\n"))
    sid = start(node, repo)
    refused(events(node, repo, sid, [write(path, oid)]))
    r = node.api("GET", f"/api/v1/repos/{repo}/sessions/{sid}", node.admin_token)
    assert [e["type"] for e in r.data["events"]] == ["start"] and r.data["changes"] == []  # nothing appended


@pytest.mark.parametrize("path", BAD_PATHS + LONG_PATHS)
def test_api_refuses_unsafe_path_in_a_one_request_landing(node: Forge, path: str) -> None:
    repo = new_repo(node)
    content = blob_bytes(b"payload\n")
    refused(land_whole(node, repo, [content], [write("ok.txt", digest(content)), write(path, digest(content))]))
    assert head(node, repo) == 0
    assert node.api("GET", f"/api/v1/repos/{repo}/sessions", node.admin_token).data["sessions"] == []


@pytest.mark.parametrize("path", SYMLINK_NAMES)
def test_api_refuses_git_dotfiles_as_symbolic_links(node: Forge, path: str) -> None:
    repo = new_repo(node)
    target = blob_bytes(b"../../../../etc/passwd")
    refused(land_whole(node, repo, [target], [write(path, digest(target), LINK)]), "symbolic link")
    assert head(node, repo) == 0
    # the same name as a plain file is fine
    r = land_whole(node, repo, [target], [write(path, digest(target), FILE)])
    assert r.status_code == 200, r.data


@pytest.mark.parametrize("name", [".git", ".GIT.", ".Git ", "GIT~1", ".g\u200cit", "\ufeff.git", ".HIF",
                                  ".git::$INDEX_ALLOCATION", "file::$DATA", "a\\b", "tab\t", "x" * 256])
def test_api_refuses_a_tree_naming_an_unsafe_entry(node: Forge, name: str) -> None:
    """A checkpoint tree (or any tree) with such a name is refused when uploaded."""
    repo = new_repo(node)
    content = blob_bytes(b"x")
    r = node.api("POST", f"/api/v1/repos/{repo}/objects/put", node.admin_token,
                 {"objects": [pack(tree_bytes({name: Entry(FILE, digest(content))}))]})
    refused(r)


# -- 3: names that collide on checkout ---------------------------------------------------------------


COLLIDING = [
    ("README", "readme"),
    ("Makefile", "MAKEFILE"),
    (f"caf{NFC_E}.txt", f"caf{NFD_E}.txt"),
    (f"CAF{NFC_E}.txt", f"caf{NFD_E}.txt"),
    ("docs/a.txt", "Docs/b.txt"),  # the directories collide
    ("src/Main.py", "src/main.py"),
    ("straße", "STRASSE"),  # full case folding
    ("\u212aelvin", "kelvin"),  # KELVIN SIGN folds to k
]


@pytest.mark.parametrize("pair", COLLIDING)
def test_api_refuses_colliding_names_in_one_request(node: Forge, pair: tuple[str, str]) -> None:
    repo = new_repo(node)
    a, b = blob_bytes(b"a\n"), blob_bytes(b"b\n")
    refused(land_whole(node, repo, [a, b], [write(pair[0], digest(a)), write(pair[1], digest(b))]),
            "case-insensitive")
    assert head(node, repo) == 0


@pytest.mark.parametrize("pair", COLLIDING)
def test_landing_refuses_a_name_colliding_with_the_mainline(node: Forge, pair: tuple[str, str]) -> None:
    repo = new_repo(node)
    a, b = blob_bytes(b"a\n"), blob_bytes(b"b\n")
    assert land_whole(node, repo, [a], [write(pair[0], digest(a))]).status_code == 200
    # a session adding the other spelling, event by event, is refused when it lands
    sid = start(node, repo)
    (bid,) = put(node, repo, b)
    assert events(node, repo, sid, [write(pair[1], bid)]).status_code == 200
    r = node.api("POST", f"/api/v1/repos/{repo}/sessions/{sid}/land", node.admin_token)
    message = refused(r, "case-insensitive")
    assert ascii(pair[1].split("/")[0]).strip("'") in message
    assert head(node, repo) == 1
    # renaming (delete one spelling, write the other) is not a collision
    sid = start(node, repo)
    old = pair[0]
    assert events(node, repo, sid, [{"type": "delete", "path": old, "role": "agent"},
                                    write(pair[1], bid)]).status_code == 200
    r = node.api("POST", f"/api/v1/repos/{repo}/sessions/{sid}/land", node.admin_token)
    assert r.status_code == 200, r.data


# -- 4: file entries must name blobs ---------------------------------------------------------------


def _not_a_blob(f: Forge, repo: str, what: str) -> bytes:
    if what == "tree":
        (oid,) = put(f, repo, tree_bytes({"f": Entry(FILE, digest(blob_bytes(b"f")))}), blob_bytes(b"f"))[:1]
        return oid
    if what == "empty tree":
        put(f, repo, tree_bytes({}))
        return EMPTY_TREE
    if what == "snapshot":
        content = blob_bytes(b"landed\n")
        r = land_whole(f, repo, [content], [write("landed.txt", digest(content))])
        assert r.status_code == 200, r.data
        s = f.api("GET", f"/api/v1/repos/{repo}/sessions/{r.data['session']}", f.admin_token).data
        return s["snapshot"]
    if what == "junk":
        (oid,) = put(f, repo, encode(["junk", {"not": "a blob"}]))
        return oid
    (oid,) = put(f, repo, encode(["blob", "text, not bytes"]))  # a 'blob' whose body is no byte string
    return oid


KINDS = ["tree", "empty tree", "snapshot", "junk", "mis-shaped blob"]


@pytest.mark.parametrize("what", KINDS)
def test_api_refuses_a_file_entry_naming_a_non_blob_in_an_event(node: Forge, what: str) -> None:
    repo = new_repo(node)
    oid = _not_a_blob(node, repo, what)
    sid = start(node, repo)
    refused(events(node, repo, sid, [write("file.txt", oid)]), "not a blob")
    r = node.api("GET", f"/api/v1/repos/{repo}/sessions/{sid}", node.admin_token)
    assert r.data["changes"] == []


@pytest.mark.parametrize("what", KINDS)
def test_api_refuses_a_file_entry_naming_a_non_blob_in_one_request(node: Forge, what: str) -> None:
    repo = new_repo(node)
    oid = _not_a_blob(node, repo, what)
    before = head(node, repo)
    refused(land_whole(node, repo, [], [write("file.txt", oid)]), "not a blob")
    assert head(node, repo) == before
    # the repository stays clonable: its tree still reads
    r = node.api("GET", f"/api/v1/repos/{repo}/tree", node.admin_token)
    assert r.status_code == 200, r.data


# -- landing itself (plumbing: a session written without the API's checks) ---------------------------


def test_landing_checks_kinds_and_paths_of_what_it_lands(tmp_path: Path) -> None:
    """Events appended straight to the store (as a buggy or hostile writer could) are refused when
    they land: a file naming a tree, a snapshot, a missing object, and a reserved path."""

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api")
        blob = await repo.objects.put_blob(b"x\n")
        tree = await repo.objects.put_tree({"f": Entry(FILE, blob)})
        cases = {"tree": (tree, "not a blob"), "missing": (digest(b"nothing"), "missing")}
        for what, (oid, says) in cases.items():
            s = await repo.sessions.start(what, "ana", "agent", 0)
            await repo.sessions.append(s.id, {"type": "write", "author": "ana", "role": "agent",
                                              "time": 1.0, "path": "f.txt", "kind": FILE, "blob": oid})
            fresh = Repo(store, "acme/api")  # a lander that saw none of these objects written
            with pytest.raises(CorruptObject, match=says):
                await land(fresh, await fresh.sessions.load(s.id))
        for path in (".git/config", "a/.GIT./x", "x" * 300):
            s = await repo.sessions.start("bad path", "ana", "agent", 0)
            await repo.sessions.append(s.id, {"type": "write", "author": "ana", "role": "agent",
                                              "time": 1.0, "path": path, "kind": FILE, "blob": blob})
            with pytest.raises(InvalidPath):
                await land(repo, await repo.sessions.load(s.id))
        assert await repo.mainline.head() == 0
        await store.close()

    asyncio.run(go())


# -- the CLI: a working copy holding such a file ------------------------------------------------------


CLI_BAD = ["sub/.GIT/config", ".git./hooks/x", "GIT~1/config", "a/.hif/x", ".g\u200cit/config",
           "back\\slash", "tab\there"]


def hif(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIF_AUTHOR": "tester", "HIF_ROLE": "human"}
    env.pop("HIF_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "hif.cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def one_line_error(p: subprocess.CompletedProcess[str], *says: str) -> str:
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for s in says:
        assert s in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("bad", CLI_BAD)
def test_cli_refuses_a_working_file_it_may_not_record(tmp_path: Path, bad: str) -> None:
    assert hif(tmp_path, "init", "demo").returncode == 0
    work = tmp_path / "demo"
    assert hif(work, "session", "start", "innocent").returncode == 0
    (work / "ok.txt").write_text("fine\n")
    (work / bad).parent.mkdir(parents=True, exist_ok=True)
    (work / bad).write_text("[core]\n\tfsmonitor = touch pwned\n")
    one_line_error(hif(work, "land"), "cannot be recorded")
    log = json.loads(hif(work, "log", "--json").stdout)
    assert log["landings"] == []
    # removing it lets the session land the rest
    os.unlink(work / bad)
    assert hif(work, "land").returncode == 0, "landing without the bad file"


# -- git import --------------------------------------------------------------------------------------


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    p = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True, check=True)
    return p.stdout.decode().strip()


def _mktree(src: Path, entries: list[tuple[str, str, str, str]]) -> str:
    text = "".join(f"{mode} {kind} {oid}\t{name}\n" for mode, kind, oid, name in entries)
    return git(src, "mktree", input=text.encode())


GIT_BAD = [".git", ".GIT", ".git.", "GIT~1", "HIF~1", ".Hif ", "back\\slash", "x" * 256]


@pytest.mark.parametrize("name", GIT_BAD + ["link:.gitmodules"])
def test_git_import_refuses_a_history_with_an_unsafe_path(tmp_path: Path, name: str) -> None:
    """Built with git plumbing (``git add`` refuses these names): the import stops at the bad commit
    with one line naming it and the path; what came before it landed."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    blob = git(src, "hash-object", "-w", "--stdin", input=b"[core]\n\tfsmonitor = touch pwned\n")
    good = _mktree(src, [("100644", "blob", blob, "ok.txt")])
    first = git(src, "commit-tree", good, "-m", "fine")
    if name.startswith("link:"):
        name = name[5:]
        bad = _mktree(src, [("100644", "blob", blob, "ok.txt"), ("120000", "blob", blob, name)])
    else:
        inner = _mktree(src, [("100644", "blob", blob, "config")])
        bad = _mktree(src, [("100644", "blob", blob, "ok.txt"), ("040000", "tree", inner, name)])
    second = git(src, "commit-tree", bad, "-p", first, "-m", "hostile")
    git(src, "update-ref", "refs/heads/main", second)
    line = one_line_error(hif(tmp_path, "import", "git", "src", "w"), f"commit {second}")
    assert "cannot be represented" in line or "symbolic link" in line
    log = json.loads(hif(tmp_path / "w", "log", "--json").stdout)["landings"]
    assert [x["goal"] for x in log] == ["fine"]


# -- federation: a hostile peer's landing ------------------------------------------------------------


class _Peer(http.server.BaseHTTPRequestHandler):
    """A hostile origin's object API: answers ``objects/get`` and ``objects/stream`` from ``objects``
    (stored forms)."""

    objects: dict[bytes, bytes] = {}

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        ids = cbor2.loads(self.rfile.read(int(self.headers["Content-Length"])))["ids"]
        rows = [[i, self.objects[i]] for i in ids if i in self.objects]
        if self.path.endswith("/objects/stream"):  # a CBOR sequence, then the count
            body = b"".join(cbor2.dumps(r) for r in rows) + cbor2.dumps({"count": len(rows)})
            kind = "application/cbor-seq"
        else:
            body, kind = cbor2.dumps({"objects": rows}), "application/cbor"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[tuple[str, dict[bytes, bytes]]]:
    objects: dict[bytes, bytes] = {}
    handler = type("Peer", (_Peer,), {"objects": objects})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/repos/acme/api", objects
    finally:
        server.shutdown()
        server.server_close()


def _hostile(case: str) -> tuple[list[bytes], bytes, dict[str, Entry | None]]:
    """(objects the peer serves, the record's tree, the record's changes) for one hostile case."""
    content = blob_bytes(b"[core]\n\tfsmonitor = touch pwned\n")
    b = digest(content)
    if case.startswith("tree:"):  # the record's changes look fine; its tree holds the name
        name = case[5:]
        inner = tree_bytes({"config": Entry(FILE, b)})
        root = tree_bytes({"ok.txt": Entry(FILE, b), name: Entry(DIR, digest(inner))})
        return [content, inner, root], digest(root), {"ok.txt": Entry(FILE, b)}
    if case == "file names a tree":
        inner = tree_bytes({"x": Entry(FILE, b)})
        root = tree_bytes({"f.txt": Entry(FILE, digest(inner))})
        return [content, inner, root], digest(root), {"f.txt": Entry(FILE, digest(inner))}
    if case == "directory names a blob":
        root = tree_bytes({"d": Entry(DIR, b)})
        return [content, root], digest(root), {"d/x": Entry(FILE, b)}
    path = case[5:]  # "path:<p>": the record's own changes name the path
    return [content], digest(tree_bytes({})), {path: Entry(FILE, b)}


FED_CASES = ["tree:.git", "tree:.GIT.", "tree:GIT~1", "tree:.g\u200cit", "tree:a\\b", "tree:" + "n" * 256,
             "file names a tree", "directory names a blob", "path:.git/config", "path:sub/.Git /hooks/x",
             "path:HIF~1/x"]


@pytest.mark.parametrize("case", FED_CASES)
def test_mirror_refuses_a_hostile_peers_landing(tmp_path: Path, peer: tuple[str, dict[bytes, bytes]],
                                                case: str) -> None:
    api, served = peer

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = mirror_repo(store, "127.0.0.1", "acme/api")
        objects, tree, changes = _hostile(case)
        for c in objects:
            served[digest(c)] = pack(c)
        try:
            session = LandedSession("a" * 16, digest(b"snap"), "hostile", "eve", "agent", 0, changes)
            record = LandingRecord(position=1, tree=tree, parent_tree=EMPTY_TREE, time=1.0,
                                   sessions=[session])
            raw = record.to_bytes()
            landing = Landing("http://127.0.0.1", "acme/api", 1, raw, LandingRecord.from_bytes(raw, 1),
                              {}, b"wire")
        except InvalidPath:  # the record itself is refused when read (what the inbox does first)
            assert case.startswith("path:")
            await store.close()
            return
        assert not case.startswith("path:"), "a record naming an unsafe path was read"
        fetcher = Fetcher(FedSettings(allow_private=("127.0.0.1",)))
        try:
            with pytest.raises(HifError) as refusal:
                await mirror_apply(repo, [landing], fetcher, api, {})
            assert refusal.value.http_status == 422, refusal.value  # refused for what it holds
        finally:
            await fetcher.close()
        assert await repo.mainline.head() == 0  # nothing applied
        assert not [k async for k in store.iter_keys(repo.prefix + "log/")]
        await store.close()

    asyncio.run(go())


# -- checkout: defence in depth -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [".git/config", "sub/.GIT./x", "GIT~1/hooks/post-checkout", "a/.hif/x"])
def test_checkout_never_writes_an_unsafe_path(tmp_path: Path, path: str) -> None:
    from hif.worktree.checkout import check_out
    from hif.worktree.workspace import WorkTree

    assert hif(tmp_path, "init", "demo").returncode == 0
    work = WorkTree(tmp_path / "demo")
    content = b"[core]\n\tfsmonitor = touch pwned\n"
    oid = digest(blob_bytes(content))
    with pytest.raises(InvalidPath):
        check_out(work, [("ok.txt", Entry(FILE, oid)), (path, Entry(FILE, oid))],
                  lambda ids: iter([(i, content) for i in ids]))
    assert not (tmp_path / "demo" / path).exists()
    assert not (tmp_path / "demo" / path.split("/")[0]).exists()


@pytest.mark.parametrize("pair", COLLIDING[:3])
def test_concurrent_landers_never_land_a_colliding_pair(tmp_path: Path, pair: tuple[str, str]) -> None:
    """Two sessions landing at once (group landing: one lander may take the other's intent into its
    record) with names that collide: one lands, the other is refused naming both, whoever leads."""

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api")
        sessions = []
        for i, path in enumerate(pair * 3):  # three rounds, so that grouping happens in some
            if i % 2 == 0:
                sessions = []
            s = await repo.sessions.start(f"s{i}", "ana", "agent", await repo.mainline.head())
            b = await repo.objects.put_blob(b"%d\n" % i)
            await repo.sessions.append(s.id, {"type": "write", "author": "ana", "role": "agent",
                                              "time": 1.0, "path": path, "kind": FILE, "blob": b})
            sessions.append(await repo.sessions.load(s.id))
            if i % 2 == 1:
                results = await asyncio.gather(*(land(repo, x) for x in sessions), return_exceptions=True)
                # one lands (later: the spelling the mainline holds), the other is refused
                assert sum(not isinstance(r, BaseException) for r in results) == 1, results
                for r in results:
                    if isinstance(r, BaseException):
                        assert isinstance(r, InvalidPath) and "case-insensitive" in str(r), r
        tree = await repo.objects.get_tree(await repo.mainline.tree_at(await repo.mainline.head()))
        assert len(tree) == 1, sorted(tree)
        await store.close()

    asyncio.run(go())


def test_collisions_are_found_in_a_landing_wider_than_the_tree_cache(tmp_path: Path) -> None:
    """A landing writing more new directories than the tree cache holds (its new trees not stored
    yet) still checks them all: the colliding directory is the last of many."""

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api")
        repo.objects._cache_size = 8
        paths = [f"d{i:03}/e/f.txt" for i in range(120)] + ["D119/e/g.txt"]
        blobs = [await repo.objects.put_blob(p.encode()) for p in paths]  # every directory differs
        s = await repo.sessions.start("wide", "ana", "agent", 0)
        for p, b in zip(paths, blobs, strict=True):
            await repo.sessions.append(s.id, {"type": "write", "author": "ana", "role": "agent",
                                              "time": 1.0, "path": p, "kind": FILE, "blob": b})
        with pytest.raises(InvalidPath, match="d119"):
            await land(repo, await repo.sessions.load(s.id), group=1)
        s = await repo.sessions.start("wide, fine", "ana", "agent", 0)
        for p, b in zip(paths[:-1], blobs, strict=False):
            await repo.sessions.append(s.id, {"type": "write", "author": "ana", "role": "agent",
                                              "time": 1.0, "path": p, "kind": FILE, "blob": b})
        assert (await land(repo, await repo.sessions.load(s.id), group=1)).position == 1
        await store.close()

    asyncio.run(go())
