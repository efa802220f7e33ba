"""The ``micelio admin`` command as a user runs it: real processes over an embedded store, checked
through the same Accounts API the node uses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hif.repo import Repo
from hif.store import EmbeddedStore, ObjectStore
from node.accounts import Accounts
from node.authdb import AuthDB, log_key
from node.principal import Principal

T = TypeVar("T")
MICELIO = str(Path(sys.executable).parent / "micelio")


def micelio(store: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MICELIO, "admin", "--store", str(store), *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )


def with_accounts(store_dir: Path, tmp: Path, body: Callable[[Accounts, ObjectStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = EmbeddedStore(store_dir)
        try:
            return await body(Accounts(AuthDB(store, tmp / "check-cache")), store)
        finally:
            await store.close()

    return asyncio.run(main())


def authenticate(store_dir: Path, tmp: Path, secret: str) -> Principal | None:
    async def body(acc: Accounts, store: ObjectStore) -> Principal | None:
        return await acc.authenticate(secret)

    return with_accounts(store_dir, tmp, body)


def snapshot(store_dir: Path) -> dict[str, bytes]:
    """Every stored value, to show a refused command changed nothing."""
    data = store_dir / "data"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def assert_one_error_line(r: subprocess.CompletedProcess[str], *, code: int = 1, says: str = "") -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert says in lines[0]
    assert r.stdout == ""


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with alice (admin), bob, the organisation acme and the repository acme/api."""
    path = tmp_path_factory.mktemp("template") / "store"
    assert micelio(path, "user", "create", "alice", "--admin").returncode == 0
    assert micelio(path, "user", "create", "bob", "--password-stdin", stdin="bobs password\n").returncode == 0
    assert micelio(path, "org", "create", "acme", "--owner", "alice").returncode == 0
    r = micelio(path, "repo", "create", "acme/api", "--private")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def store_dir(template_store: Path, tmp_path: Path) -> Path:
    """A private copy of the template store (built once: each command is a process)."""
    path = tmp_path / "store"
    shutil.copytree(template_store, path)
    return path


def test_help_lists_the_commands() -> None:
    r = subprocess.run([MICELIO, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "serve" in r.stdout and "admin" in r.stdout
    r = subprocess.run([MICELIO, "admin", "token", "create", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--expires" in r.stdout


def test_user_create_prints_a_password_that_works(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = micelio(store, "user", "create", "alice")
    assert r.returncode == 0, r.stderr
    prefix = "created user alice; password: "
    assert r.stdout.startswith(prefix) and r.stdout.count("\n") == 1
    password = r.stdout.strip()[len(prefix):]
    assert len(password) >= 20

    async def check(acc: Accounts, s: ObjectStore) -> tuple[bool, bool, dict[str, Any] | None]:
        return await acc.check_password("alice", password), await acc.check_password("alice", "x"), \
            await acc.get_user("alice")

    ok, wrong, user = with_accounts(store, tmp_path, check)
    assert ok and not wrong and user is not None and not user["admin"]

    r = micelio(store, "user", "create", "root", "--admin", "--password-stdin", "--json", stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "root", "admin": True}
    r = micelio(store, "user", "passwd", "alice", "--password-stdin", stdin="changed\n")
    assert r.returncode == 0 and r.stdout.strip() == "password of alice changed"

    async def check2(acc: Accounts, s: ObjectStore) -> tuple[bool, bool]:
        return await acc.check_password("root", "s3cret"), await acc.check_password("alice", "changed")

    assert with_accounts(store, tmp_path, check2) == (True, True)
    r = micelio(store, "user", "list", "--json")
    assert [(u["name"], u["admin"]) for u in json.loads(r.stdout)["users"]] == [("alice", False), ("root", True)]
    r = micelio(store, "user", "list")
    assert r.stdout.splitlines()[0].startswith("alice") and "admin" in r.stdout.splitlines()[1]


def test_token_create_prints_only_a_token_that_authenticates(store_dir: Path, tmp_path: Path) -> None:
    r = micelio(store_dir, "token", "create", "bob", "--scope", "repo:write", "--repo", "acme/api",
                "--expires", "30d", "--name", "ci")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert r.stdout == secret + "\n" and secret.startswith("mcl_") and r.stderr == ""
    p = authenticate(store_dir, tmp_path, secret)
    assert p is not None and (p.user, p.scope, p.repo, p.session) == ("bob", "write", "acme/api", None)
    assert p.expires is not None and abs(p.expires - (time.time() + 30 * 86400)) < 120

    r = micelio(store_dir, "token", "create", "alice", "--scope", "admin", "--json")
    doc = json.loads(r.stdout)
    assert doc["scope"] == "admin" and doc["expires"] is None and doc["repo"] is None
    p = authenticate(store_dir, tmp_path, doc["token"])
    assert p is not None and p.admin and p.scope == "admin" and p.token_id == doc["id"]

    for expires, seconds in (("12h", 12 * 3600), ("90m", 90 * 60)):
        r = micelio(store_dir, "token", "create", "bob", "--scope", "read", "--expires", expires)
        p = authenticate(store_dir, tmp_path, r.stdout.strip())
        assert p is not None and p.expires is not None and abs(p.expires - time.time() - seconds) < 120


def test_token_list_and_revoke(store_dir: Path, tmp_path: Path) -> None:
    secret = micelio(store_dir, "token", "create", "bob", "--scope", "read", "--name", "laptop").stdout.strip()
    r = micelio(store_dir, "token", "list", "bob", "--json")
    (tok,) = json.loads(r.stdout)["tokens"]
    assert tok["name"] == "laptop" and tok["revoked"] is None and "hash" not in tok
    assert secret not in r.stdout
    assert tok["id"] in micelio(store_dir, "token", "list", "bob").stdout
    assert authenticate(store_dir, tmp_path, secret) is not None

    r = micelio(store_dir, "token", "revoke", tok["id"])
    assert r.returncode == 0 and r.stdout.strip() == f"revoked token {tok['id']}"
    assert authenticate(store_dir, tmp_path, secret) is None
    assert "revoked" in micelio(store_dir, "token", "list", "bob").stdout
    assert_one_error_line(micelio(store_dir, "token", "revoke", "nope"), says="no token nope")


def test_repo_create_makes_the_store_part_and_registers(store_dir: Path, tmp_path: Path) -> None:
    async def check(acc: Accounts, store: ObjectStore) -> tuple[Any, ...]:
        repo = Repo(store, "acme/api")
        return await repo.exists(), await repo.meta(), await acc.get_repo("acme/api"), \
            await acc.role_on("bob", "acme/api"), await acc.role_on("alice", "acme/api")

    exists, meta, reg, bob, alice = with_accounts(store_dir, tmp_path, check)
    assert exists and meta["private"] is True
    assert reg is not None and reg["private"] is True and reg["owner"] == "acme"
    assert (bob, alice) == (None, "owner")

    # an existing store part (e.g. pushed by hif before the node knew it) is kept: register only
    async def precreate(acc: Accounts, store: ObjectStore) -> None:
        await Repo(store, "bob/tool").create(description="from before")

    with_accounts(store_dir, tmp_path, precreate)
    r = micelio(store_dir, "repo", "create", "bob/tool", "--description", "a tool", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["owner"] == "bob"

    async def check2(acc: Accounts, store: ObjectStore) -> tuple[Any, ...]:
        return (await Repo(store, "bob/tool").meta())["description"], await acc.role_on("bob", "bob/tool"), \
            await acc.role_on(None, "bob/tool")

    assert with_accounts(store_dir, tmp_path, check2) == ("from before", "owner", "reader")

    r = micelio(store_dir, "repo", "member", "acme/api", "bob", "writer")
    assert r.returncode == 0, r.stderr
    r = micelio(store_dir, "org", "member", "acme", "bob", "maintainer")
    assert r.returncode == 0, r.stderr

    async def roles(acc: Accounts, store: ObjectStore) -> tuple[Any, ...]:
        return await acc.role_on("bob", "acme/api"), await acc.repo_members("acme/api")

    assert with_accounts(store_dir, tmp_path, roles) == ("maintainer", {"bob": "writer"})
    assert micelio(store_dir, "org", "member", "acme", "bob", "none").returncode == 0
    assert micelio(store_dir, "repo", "member", "acme/api", "bob", "none").returncode == 0
    assert with_accounts(store_dir, tmp_path, roles) == (None, {})


BAD_INPUT = [
    (("user", "create", "alice"), "taken"),
    (("user", "create", "bad name"), "invalid user name"),
    (("user", "create", ".hidden"), "invalid user name"),
    (("user", "create", "acme"), "taken"),  # an organisation's name
    (("user", "passwd", "nobody", "--password-stdin"), "no user nobody"),
    (("token", "create", "nobody", "--scope", "read"), "no user nobody"),
    (("token", "create", "bob", "--scope", "root"), "unknown scope"),
    (("token", "create", "bob", "--scope", "repo:everything"), "unknown scope"),
    (("token", "create", "bob", "--scope", "read", "--expires", "30y"), "invalid duration"),
    (("token", "create", "bob", "--scope", "read", "--expires", "0d"), "invalid duration"),
    (("token", "create", "bob", "--scope", "read", "--expires", "soon"), "invalid duration"),
    (("token", "create", "bob", "--scope", "read", "--repo", "no-slash"), "owner/name"),
    (("token", "list", "nobody"), "no user nobody"),
    (("org", "create", "acme", "--owner", "alice"), "taken"),
    (("org", "create", "bob", "--owner", "alice"), "taken"),
    (("org", "create", "new", "--owner", "nobody"), "no user nobody"),
    (("org", "create", "bad/name", "--owner", "alice"), "invalid organisation name"),
    (("org", "member", "acme", "bob", "god"), "unknown role"),
    (("org", "member", "acme", "alice", "reader"), "last owner"),
    (("repo", "create", "acme/api"), "exists"),
    (("repo", "create", "ghost/api"), "no user or organisation ghost"),
    (("repo", "create", "acme/x", "--owner", "nobody"), "no user nobody"),
    (("repo", "create", "bad"), "owner/name"),
    (("repo", "create", "acme/../x"), "owner/name"),
    (("repo", "member", "acme/none", "bob", "reader"), "no repository acme/none"),
]


@pytest.mark.parametrize(("args", "says"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_error_line_and_changes_nothing(store_dir: Path, args: tuple[str, ...], says: str) -> None:
    before = snapshot(store_dir)
    r = micelio(store_dir, *args, stdin="a password\n")
    assert_one_error_line(r, says=says)
    assert snapshot(store_dir) == before


def test_errors_as_json(store_dir: Path) -> None:
    r = micelio(store_dir, "token", "create", "nobody", "--scope", "read", "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert json.loads(r.stdout) == {"error": {"type": "NotFound", "message": "no user nobody"}}


def test_store_from_the_environment_and_a_lasting_cache(tmp_path: Path) -> None:
    store = tmp_path / "env-store"
    cache = tmp_path / "cache"
    env = {**os.environ, "MICELIO_STORE": str(store), "MICELIO_CACHE_DIR": str(cache)}
    r = subprocess.run([MICELIO, "admin", "user", "create", "zed", "--password-stdin"], input="pw\n",
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert (store / "data" / log_key(1)).is_file()
    assert [p.name for p in cache.iterdir() if p.name.endswith(".sqlite")]
    r = subprocess.run([MICELIO, "admin", "user", "list", "--json"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert [u["name"] for u in json.loads(r.stdout)["users"]] == ["zed"]


def test_the_event_loop_is_chosen_by_micelio_loop(tmp_path: Path) -> None:
    """``MICELIO_LOOP``: uvloop (the default when installed) and asyncio's own loop both serve the
    API and the web UI; anything else stops the start with one readable line, before it listens."""
    from forge import refused_start, start_forge

    for loop in ("asyncio", "uvloop", "auto"):
        f = start_forge(tmp_path / loop, env={"MICELIO_LOOP": loop})
        try:
            assert f.api("GET", "/healthz").status_code == 200
            assert f.api("GET", "/api/v1/whoami", f.admin_token).data["user"] == "admin"
            r = f.api("POST", "/api/v1/repos", f.admin_token, {"name": "admin/x"})
            assert r.status_code in (200, 201), r.data
            assert f.api("GET", "/api/v1/repos/admin/x/head", f.admin_token).data["position"] == 0
        finally:
            f.stop()
    for bad in ("uvlop", "", "UVLOOP", "trio"):
        err = refused_start(tmp_path, {"MICELIO_LOOP": bad})
        assert err.strip() == f"error: MICELIO_LOOP must be auto, uvloop or asyncio, not {bad!r}", (bad, err)
