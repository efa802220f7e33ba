"""Seeded data for the web UI's tests and screenshots, made the way users make it: over the HTTP API
of a running node (``tests/forge.py``), plus one big repository written straight into the store.

- ``acme/widgets`` (public): a README, directories, a Python file changed by three landed sessions
  with conversation, decisions and checkpoints, and one open session;
- ``acme/secret`` (private): readable by members of ``acme`` only;
- ``acme/big`` (public): a directory of 10,000 files and a 1 MB Python file;
- ``acme/imported`` (public, ana an owner): a git history imported with ``micelio admin repo import``,
  with what stretches a page: long author names and e-mail addresses, a commit body in Markdown, a
  merge (iterations), long lines and names, raw HTML in the README;
- users ``ana`` (maintainer of ``acme``, password :data:`PASSWORD`) and ``stranger`` (no roles).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge import Forge

from hif.landing import land
from hif.mainline import LandingRecord
from hif.objects import FILE, Entry, blob_bytes, digest, pack, tree_bytes
from hif.repo import Repo
from hif.store.embedded import EmbeddedStore

PASSWORD = "correct horse battery"
PUBLIC, PRIVATE, BIG, IMPORTED = "acme/widgets", "acme/secret", "acme/big", "acme/imported"
BIG_DIR_ENTRIES = 10_000
# Debian's Chromium, driven by Playwright (tests and scripts/screenshots.py)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# nodes of the UI tests may fetch from each other on loopback (federation refuses private addresses)
FED_ENV = {"MICELIO_FEDERATION_ALLOW_PRIVATE": "127.0.0.1", "MICELIO_FEDERATION_TIMEOUT": "5"}


@dataclass
class Seeded:
    forge: Forge
    ana: str  # ana's write token
    stranger: str
    sessions: dict[str, str] = field(default_factory=dict)  # goal -> id
    commits: dict[str, str] = field(default_factory=dict)  # subject -> git commit id, of IMPORTED
    open_session: str = ""
    big_file_bytes: int = 0


CORE_V1 = '''"""Widgets for terminal programs."""


class Widget:
    """Something that draws itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def render(self) -> str:
        return f"[{self.name}]"
'''

CORE_V2 = CORE_V1 + '''

class Spinner(Widget):
    """A spinner that turns once per tick."""

    FRAMES = "|/-\\\\"

    def __init__(self) -> None:
        super().__init__("spinner")
        self.tick = 0

    def render(self) -> str:
        self.tick += 1
        return self.FRAMES[self.tick % len(self.FRAMES) + 1]
'''

CORE_V3 = CORE_V2.replace("self.FRAMES[self.tick % len(self.FRAMES) + 1]",
                          "self.FRAMES[self.tick % len(self.FRAMES)]")

README = """# Widgets

Small widgets for terminal programs, built by people **and** agents.

- `Widget`: the base class
- `Spinner`: turns once per tick

```python
from widgets.core import Spinner
print(Spinner().render())
```

<script>alert("this must show as text")</script>
"""


def obj(content: bytes) -> tuple[bytes, bytes]:
    canonical = blob_bytes(content)
    return digest(canonical), pack(canonical)


class Client:
    """A few API calls, asserting success."""

    def __init__(self, forge: Forge, token: str, repo: str) -> None:
        self.forge, self.token, self.repo = forge, token, repo

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.forge.api(method, f"/api/v1/repos/{self.repo}{path}", self.token, body)
        assert r.status_code == status, (method, path, r.status_code, r.data)
        return r.data

    def start(self, goal: str, role: str = "human", author: str | None = None) -> str:
        body: dict[str, Any] = {"goal": goal, "role": role}
        if author:
            body["author"] = author
        return self.call("POST", "/sessions", body, 201)["id"]

    def put(self, content: bytes) -> bytes:
        oid, stored = obj(content)
        self.call("POST", "/objects/put", {"objects": [stored]})
        return oid

    def tree(self, files: dict[str, bytes]) -> bytes:
        """Upload the tree objects of a nested file map; return the root tree id."""
        nested: dict[str, Any] = {}
        for path, oid in files.items():
            *dirs, name = path.split("/")
            d = nested
            for part in dirs:
                d = d.setdefault(part, {})
            d[name] = oid

        def build(d: dict[str, Any]) -> bytes:
            entries = {n: Entry("d", build(v)) if isinstance(v, dict) else Entry(FILE, v) for n, v in d.items()}
            canonical = tree_bytes(entries)
            self.call("POST", "/objects/put", {"objects": [pack(canonical)]})
            return digest(canonical)

        return build(nested)

    def events(self, sid: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
        return self.call("POST", f"/sessions/{sid}/events", {"events": list(events)})["events"]

    def land(self, sid: str) -> int:
        return self.call("POST", f"/sessions/{sid}/land", {})["position"]


def say(text: str, role: str, author: str) -> dict[str, Any]:
    return {"type": "say", "text": text, "role": role, "author": author}


def decide(decision: str, why: str, alternatives: list[str], role: str, author: str) -> dict[str, Any]:
    return {"type": "decide", "decision": decision, "why": why, "alternatives": alternatives, "role": role,
            "author": author}


def write(path: str, oid: bytes, role: str, author: str) -> dict[str, Any]:
    return {"type": "write", "path": path, "kind": FILE, "blob": oid, "role": role, "author": author}


def seed(forge: Forge) -> Seeded:
    a = forge.admin_token
    for user in ("ana", "stranger"):
        forge.micelio("admin", "user", "create", user, "--password-stdin", input=PASSWORD + "\n")
    data = Seeded(forge, forge.user("ana"), forge.user("stranger"))
    for name, private, desc in ((PUBLIC, False, "Terminal widgets, built by people and agents"),
                                (PRIVATE, True, "Plans nobody else may see"),
                                (BIG, False, "A big directory and a big file")):
        r = forge.api("POST", "/api/v1/repos", a, {"name": name, "private": private, "description": desc})
        assert r.status_code == 201, r.data
    assert forge.api("PUT", "/api/v1/orgs/acme/members/ana", a, {"role": "maintainer"}).status_code == 200

    c = Client(forge, data.ana, PUBLIC)
    files: dict[str, bytes] = {}

    # 1. a human starts the library with an agent's help
    sid = c.start("Create the widget library")
    files["README.md"] = c.put(README.encode())
    files["src/widgets/__init__.py"] = c.put(b'"""Terminal widgets."""\n')
    files["src/widgets/core.py"] = c.put(CORE_V1.encode())
    c.events(sid,
             say("Should widgets draw with curses or plain strings?", "agent", "claude"),
             say("Plain strings: they are easy to test.", "human", "ana"),
             write("README.md", files["README.md"], "agent", "claude"),
             {"type": "checkpoint", "note": "README first", "iteration": 1, "role": "agent", "author": "claude",
              "tree": c.tree({"README.md": files["README.md"]})},
             write("src/widgets/__init__.py", files["src/widgets/__init__.py"], "agent", "claude"),
             write("src/widgets/core.py", files["src/widgets/core.py"], "agent", "claude"),
             {"type": "checkpoint", "note": "the base class", "iteration": 2, "role": "agent", "author": "claude",
              "tree": c.tree(dict(files))},
             decide("Render to plain strings", "strings can be asserted in tests without a terminal",
                    ["curses windows", "ANSI escape sequences"], "human", "ana"))
    c.land(sid)
    data.sessions["Create the widget library"] = sid

    # 2. an agent adds a spinner, with two iterations
    sid = c.start("Add a spinner widget", role="agent", author="claude")
    spinner_first = c.put(CORE_V2.replace(" + 1]", "]").encode())
    files["docs/guide.md"] = c.put(b"# Guide\n\nCall `render()` once per tick.\n")
    c.events(sid,
             say("I will add a Spinner that cycles through four frames.", "agent", "claude"),
             write("src/widgets/core.py", spinner_first, "agent", "claude"),
             {"type": "checkpoint", "note": "first spinner", "iteration": 1, "role": "agent", "author": "claude",
              "tree": c.tree({**files, "src/widgets/core.py": spinner_first})})
    files["src/widgets/core.py"] = c.put(CORE_V2.encode())
    c.events(sid,
             say("Start on the second frame, please: the first looks idle.", "human", "ana"),
             write("src/widgets/core.py", files["src/widgets/core.py"], "agent", "claude"),
             write("docs/guide.md", files["docs/guide.md"], "agent", "claude"),
             {"type": "checkpoint", "note": "start on the second frame", "iteration": 2, "role": "agent",
              "author": "claude", "tree": c.tree(dict(files))},
             decide("Offset the frame index by one", "the human asked to start on the second frame",
                    ["a configurable start frame"], "agent", "claude"))
    c.land(sid)
    data.sessions["Add a spinner widget"] = sid

    # 3. a human fixes the off-by-one the offset introduced
    sid = c.start("Fix the spinner's off-by-one")
    files["src/widgets/core.py"] = c.put(CORE_V3.encode())
    c.events(sid,
             say("The offset makes the index run past the last frame.", "human", "ana"),
             write("src/widgets/core.py", files["src/widgets/core.py"], "human", "ana"),
             decide("Drop the offset", "the index must stay inside FRAMES", ["wrap with a second modulo"],
                    "human", "ana"))
    c.land(sid)
    data.sessions["Fix the spinner's off-by-one"] = sid

    # 4. an open session, being worked on right now
    sid = c.start("Document every widget", role="agent", author="claude")
    c.events(sid, say("Starting with the Spinner's docstring.", "agent", "claude"))
    data.open_session = sid

    # the private repository
    p = Client(forge, a, PRIVATE)
    sid = p.start("Write the secret plan")
    p.events(sid, write("plan.md", p.put(b"# The plan\n\nWorld domination, slowly.\n"), "human", "admin"))
    p.land(sid)

    seed_imported(forge, data)
    # in a thread of its own: Playwright's sync API may already run an event loop in this one
    with ThreadPoolExecutor(1) as pool:
        data.big_file_bytes = pool.submit(asyncio.run, _seed_big(Path(forge.store))).result()
    return data


LONG_NAME = "Bartholomew Maximilian Featherstonehaugh-Cholmondeley"
LONG_EMAIL = "bartholomew.maximilian.featherstonehaugh-cholmondeley@departement-informatique.example.org"
COMMIT_BODY = """The loader read every file twice.

It now:

- reads each file **once**
- keeps `Config` immutable

Line breaks stay
as they were written."""
LONG_LINE = "    return " + " + ".join(f"settings.value_number_{n}" for n in range(40)) + "\n"
LONG_README = ('<p align="center"><img src="https://example.org/assets/images/logos/'
               'the-terminal-toolkit-logo-in-a-rather-long-file-name.svg" alt="The terminal toolkit" '
               'width="320"></p>\n\n# Terminal toolkit\n\nAn imported history: see '
               'https://example.org/a/very/long/address/that/does/not/break/anywhere/at/all/index.html\n')


def landed_session(data: Seeded, repo: str, position: int) -> str:
    """The id of the session that landed at ``position`` of ``repo`` (one record read, over the API)."""
    r = data.forge.api("GET", f"/api/v1/repos/{repo}/log?start={position}&limit=1", data.ana)
    assert r.status_code == 200, r.data
    [[pos, raw]] = r.data["records"]
    return LandingRecord.from_bytes(raw, pos).sessions[0].session


def seed_imported(forge: Forge, data: Seeded) -> None:
    """``acme/imported``: a small git history made with git and imported by the node's CLI."""
    src = Path(forge.root) / "imported-src"
    src.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": LONG_NAME, "GIT_AUTHOR_EMAIL": LONG_EMAIL,
           "GIT_COMMITTER_NAME": LONG_NAME, "GIT_COMMITTER_EMAIL": LONG_EMAIL}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=src, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def commit(subject: str, body: str = "") -> None:
        git("add", "-A")
        git("commit", "-q", "-m", subject, *(["-m", body] if body else []))
        data.commits[subject] = git("rev-parse", "HEAD")

    git("init", "-q", "-b", "main")
    (src / "README.md").write_text(LONG_README)
    deep = src / "src" / "terminal_toolkit_configuration_loader_and_friends"
    deep.mkdir(parents=True)
    (deep / "loader.py").write_text("def total(settings):\n    return 0\n")
    commit("Start the terminal toolkit")
    (deep / "loader.py").write_text("def total(settings):\n" + LONG_LINE)
    commit("Read_every_configuration_file_only_once_instead_of_twice_when_loading", COMMIT_BODY)
    git("checkout", "-q", "-b", "topic")
    (src / "NOTES.md").write_text("# Notes\n")
    commit("Add notes")
    (src / "NOTES.md").write_text("# Notes\n\nMore.\n")
    commit("Extend the notes")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "topic", "-m", "Merge the notes")
    data.commits["Merge the notes"] = git("rev-parse", "HEAD")
    forge.micelio("admin", "repo", "import", IMPORTED, str(src), "--owner", "ana",
                  "--description", "A git history, imported")


async def _seed_big(store_path: Path) -> int:
    """``acme/big`` straight through the plumbing (10,000 write events over HTTP would take long):
    one landed session with a directory of 10,000 files and a 1 MB Python file."""
    store = EmbeddedStore(store_path, fsync=False)
    try:
        repo = Repo(store, BIG)
        small = await repo.objects.put_blob(b"x = 1\n")
        line = "def function_{n}(value: int) -> int:\n    return value * {n}  # a comment\n\n"
        text = "".join(line.format(n=n) for n in range(14_000)).encode()
        text = text[: text.rfind(b"\n", 0, 1_000_000) + 1]
        big = await repo.objects.put_blob(text)
        s = await repo.sessions.start("Add many files", "bot", "agent", 0)
        s.changes = {f"many/file{n:05d}.py": Entry(FILE, small) for n in range(BIG_DIR_ENTRIES)}
        s.changes["big.py"] = Entry(FILE, big)
        await land(repo, s)
        return len(text)
    finally:
        await store.close()
