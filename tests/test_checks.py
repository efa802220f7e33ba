"""hif check: the result cache (across workspaces and across a forge), signed attestations and
``require_checks`` on landing, with the bad cases: failing, missing and hanging commands, tampered
attestations, unknown keys, forged cache entries."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from forge import Forge
from test_remote import Hif, setup_repo

from hif import Repository
from hif.checks import CheckError, ChecksRequired, glob_matcher, parse_config, parse_timeout
from hif.errors import InvalidInput
from hif.objects import decode, encode
from hif.porcelain.checks import run_command

PY = sys.executable


def toml(command: str, *, require: bool = True, timeout: str = "30m") -> str:
    head = 'require_checks = ["test"]\n' if require else ""
    return (f'{head}[check.test]\ncommand = {json.dumps(command)}\ninputs = ["src/**"]\n'
            f'timeout = "{timeout}"\n')


def counting(counter: Path, code: int = 0) -> str:
    """A check that records each run in ``counter`` and exits with ``code``."""
    return (f"{PY} -c \"import sys; open({str(counter)!r}, 'a').write('run\\n'); "
            f"print(open('src/app.py').read()); sys.exit({code})\"")


def repo_with(tmp_path: Path, config: str) -> Repository:
    r = Repository.init(tmp_path / "main")
    with r.start_session("set up") as s:
        s.write("hif.toml", config)
        s.write("src/app.py", "print('hello')\n")
    return r


def store_files(r: Repository, under: str) -> list[Path]:
    root = r.work.meta / "store" / "data" / "repos" / r.name / under
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_cache_hit_across_two_workspaces(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    r = repo_with(tmp_path, toml(counting(counter)))
    r.start_session("first")
    first = r.check()
    assert first.ok and not first.reports[0].cached and counter.read_text() == "run\n"
    assert first.reports[0].output.strip() == b"print('hello')"
    other = r.add_workspace(tmp_path / "second")
    other.start_session("second")
    (other.root / "README").write_text("not an input\n")  # outside the inputs: same input hash
    second = other.check()
    assert second.reports[0].cached and second.reports[0].status == "passed"
    assert second.reports[0].input == first.reports[0].input
    assert counter.read_text() == "run\n"  # ran once in all
    assert other.land().position == 2  # the attestation is for this session's own tree
    shown = other.load_session(other.resolve_ref("2")[0].id)
    assert [e["attestation"]["cached"] for e in shown.of_type("attest")] == [True]


def test_require_checks_refuses_then_accepts(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    r = repo_with(tmp_path, toml(counting(counter, 1)))  # the check fails
    r.start_session("change")
    (r.root / "src" / "app.py").write_text("print('changed')\n")
    with pytest.raises(ChecksRequired, match="hif check"):
        r.land()
    failed = r.check()
    assert not failed.ok and failed.reports[0].status == "failed" and failed.reports[0].exit == 1
    with pytest.raises(ChecksRequired):  # a failing attestation does not count
        r.land()
    # fixing the check is a change of hif.toml in the session; the rule stays the base's
    (r.root / "hif.toml").write_text(toml(counting(counter, 0)))
    assert not r.check().ok  # a required check runs as the base defines it
    with pytest.raises(ChecksRequired):
        r.land()
    r.abandon()
    # without require_checks in the base, the session that changes the rule lands unchecked
    r2 = repo_with(tmp_path / "b", toml(counting(counter), require=False))
    with r2.start_session("require checks") as s:
        s.write("hif.toml", toml(counting(counter)))
    r2.start_session("edit")
    (r2.root / "src" / "app.py").write_text("print('edited')\n")
    with pytest.raises(ChecksRequired):
        r2.land()
    assert r2.check().ok
    (r2.root / "src" / "app.py").write_text("print('edited again')\n")  # another tree now
    with pytest.raises(ChecksRequired, match="for the session's tree"):
        r2.land()
    assert r2.check().ok
    assert r2.land().position == 3


def test_landing_under_require_checks_needs_the_base_to_be_the_head(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    r = repo_with(tmp_path, toml(counting(counter)))
    other = r.add_workspace(tmp_path / "other")
    r.start_session("mine")
    (r.root / "src" / "a.py").write_text("a\n")
    assert r.check().ok
    other.start_session("theirs")
    (other.root / "src" / "b.py").write_text("b\n")
    assert other.check().ok
    assert other.land().position == 2
    with pytest.raises(ChecksRequired, match="sync, re-run checks, land"):
        r.land()
    r.sync()
    assert r.check().ok
    assert r.land().position == 3


def test_tampered_attestation_and_unknown_key_are_refused(tmp_path: Path) -> None:
    r = repo_with(tmp_path, toml(counting(tmp_path / "runs")))
    r.start_session("change")
    (r.root / "src" / "app.py").write_text("print('x')\n")
    assert r.check().ok
    sid = r.session_id
    assert sid is not None
    event_file = store_files(r, f"sessions/{sid}/events")[-1]
    event = decode(event_file.read_bytes())
    assert event["type"] == "attest"
    good = event_file.read_bytes()
    sig = bytearray(event["signature"])
    sig[0] ^= 1
    event_file.write_bytes(encode({**event, "signature": bytes(sig)}))
    with pytest.raises(ChecksRequired):
        r.land()
    forged = {**event["attestation"], "exit": 0, "time": 1.0}  # edited, signature kept
    event_file.write_bytes(encode({**event, "attestation": forged}))
    with pytest.raises(ChecksRequired):
        r.land()
    event_file.write_bytes(good)
    keys_file = r.work.meta / "store" / "data" / "keys" / event["attestation"]["signer"]
    trusted = keys_file.read_bytes()
    keys_file.unlink()  # the signer's key is no longer trusted by this store
    with pytest.raises(ChecksRequired):
        r.land()
    keys_file.write_bytes(trusted)
    assert r.land().position == 2


def test_missing_command_and_hanging_check_cache_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = repo_with(tmp_path, toml("no-such-command-hif --flag", require=False))
    r.start_session("bad")
    with pytest.raises(CheckError, match="command not found: no-such-command-hif"):
        r.check()
    # under Nix the command runs as `nix develop --command ...`: without nix that is what is missing
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    spec = parse_config(f'[check.t]\ncommand = "{PY} -V"\n'.encode()).checks["t"]
    assert run_command(spec, tmp_path, nix=False)[0] == 0
    with pytest.raises(CheckError, match="command not found: nix"):
        run_command(spec, tmp_path, nix=True)
    monkeypatch.undo()
    (r.root / "hif.toml").write_text(toml(f"{PY} -c 'import time; time.sleep(60)'", timeout="0.5s"))
    with pytest.raises(CheckError, match="timed out after 0.5 s"):
        r.check()
    assert store_files(r, "cache") == []
    s = r.load_session(r.session_id or "")
    assert s.of_type("attest") == []
    with pytest.raises(InvalidInput, match="no check named nope"):
        r.check(["nope"])


def test_forged_cache_entry_is_ignored(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    r = repo_with(tmp_path, toml(counting(counter), require=False))
    r.start_session("one")
    first = r.check().reports[0]
    index = store_files(r, "cache/checks")
    assert [p.name for p in index] == [first.input.hex()]
    # a "passed" result filed under another input hash
    (r.root / "src" / "app.py").write_text("print('other')\n")
    r.record()
    other_input = r._run(_input_of(r))
    (index[0].parent / other_input.hex()).write_bytes(index[0].read_bytes())
    run = r.check()
    assert not run.reports[0].cached and counter.read_text() == "run\nrun\n"
    assert any("forged or damaged cache entry" in n for n in run.notes)
    # a result object whose bytes were altered
    obj = r.work.meta / "store" / "data" / "repos" / r.name / "objects" / run.reports[0].result.hex()
    stored = obj.read_bytes()
    obj.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))  # always a change (the last byte may be 0)
    again = r.check()
    assert not again.reports[0].cached and any("forged" in n for n in again.notes)


async def _input_of(r: Repository) -> bytes:
    from hif.checks import input_hash, read_config

    s = await r.repo.sessions.load(r.session_id or "")
    tree = await r._session_tree(s)
    config = await read_config(r.repo, tree)
    assert config is not None
    return await input_hash(r.repo, tree, config.checks["test"], nix=False)


def test_input_hash_covers_what_is_declared(tmp_path: Path) -> None:
    """The input hash changes with the declared inputs' files, the command, the declared variables,
    the tools' output, flake.lock (only with a flake.nix) and Nix; and with nothing else."""
    from hif.checks import input_hash
    from hif.objects import EMPTY_TREE, FILE, Entry
    from hif.repo import Repo
    from hif.store import EmbeddedStore
    from hif.tree import apply

    version = tmp_path / "tool-version"
    version.write_text("1.0\n")
    spec = parse_config(
        f'[check.t]\ncommand = "make test"\ninputs = ["src/**", "flake.lock"]\nenv = ["CC"]\n'
        f'tools = ["cat {version}"]\n'.encode()).checks["t"]

    async def main() -> None:
        store = EmbeddedStore(tmp_path / "store", create=True)
        try:
            repo = Repo(store, "local/h")
            await repo.ensure()

            async def tree(files: dict[str, str]) -> bytes:
                return await apply(repo.objects, EMPTY_TREE, {
                    p: Entry(FILE, await repo.objects.put_blob(t.encode())) for p, t in files.items()})

            async def h(t: bytes, *, env: dict[str, str] | None = None, nix: bool = False, s: Any = spec) -> bytes:
                return await input_hash(repo, t, s, nix=nix, environ={"CC": "gcc"} if env is None else env)

            src = {"src/a.c": "int a;\n", "README": "x\n"}
            base = await tree(src)
            h0 = await h(base)
            assert h0 == await h(base) and len(h0) == 32
            assert await h(await tree({**src, "README": "changed\n"})) == h0  # not an input
            assert await h(await tree({**src, "src/a.c": "int b;\n"})) != h0
            assert await h(base, env={"CC": "gcc", "OTHER": "1"}) == h0  # an undeclared variable
            assert await h(base, env={"CC": "clang"}) != h0
            assert await h(base, env={}) != h0  # unset is not empty
            assert await h(base, nix=True) != h0
            other_cmd = parse_config(f'[check.t]\ncommand = "make check"\ninputs = ["src/**", "flake.lock"]\n'
                                     f'env = ["CC"]\ntools = ["cat {version}"]\n'.encode()).checks["t"]
            assert await h(base, s=other_cmd) != h0
            version.write_text("2.0\n")  # the tool changed
            assert await h(base) != h0
            version.write_text("1.0\n")
            assert await h(base) == h0
            # flake.lock counts when the tree has a flake.nix, even outside the declared inputs
            narrow = parse_config(b'[check.t]\ncommand = "make test"\ninputs = ["src/**"]\n').checks["t"]
            flake = {**src, "flake.nix": "{ }\n", "flake.lock": '{"v": 1}\n'}
            f1 = await h(await tree(flake), s=narrow)
            assert await h(await tree({**flake, "flake.lock": '{"v": 2}\n'}), s=narrow) != f1
            assert await h(await tree({**flake, "flake.nix": "{ x = 1; }\n"}), s=narrow) == f1
            no_flake = {**src, "flake.lock": '{"v": 1}\n'}
            assert await h(await tree(no_flake), s=narrow) == await h(
                await tree({**no_flake, "flake.lock": '{"v": 2}\n'}), s=narrow)
        finally:
            await store.close()

    import asyncio

    asyncio.run(main())


def test_flake_without_nix_runs_directly_and_says_so(tmp_path: Path) -> None:
    """A flake.nix where no nix is installed: the check runs directly, the report says why, and a
    change of flake.lock is a cache miss (the lock is part of the input hash)."""
    hif = Hif(tmp_path / "config")
    counter = tmp_path / "runs"
    r = repo_with(tmp_path, toml(counting(counter), require=False))
    with r.start_session("a flake") as s:
        s.write("flake.nix", "{ outputs = { self }: { }; }\n")
        s.write("flake.lock", '{"version": 7}\n')
    r.close()
    no_nix = str(Path(PY).parent)  # PATH without nix: only the virtual environment's commands
    hif.run(r.root, "session", "start", "check it")
    doc = hif.js(r.root, "check", PATH=no_nix)
    assert doc["ok"] and doc["nix"] is False and doc["checks"][0]["nix"] is False
    assert doc["notes"] == ["running without Nix (nix is not installed)"]
    assert counter.read_text() == "run\n"
    assert hif.js(r.root, "check", PATH=no_nix)["checks"][0]["cached"] is True
    (r.root / "flake.lock").write_text('{"version": 8}\n')
    again = hif.js(r.root, "check", PATH=no_nix)
    assert again["checks"][0]["cached"] is False and again["checks"][0]["input"] != doc["checks"][0]["input"]
    assert counter.read_text() == "run\nrun\n"


def test_config_parsing() -> None:
    m = glob_matcher(["src/**", "*.toml", "docs"])
    assert m("src/a/b.py") and m("pyproject.toml") and m("docs/x.md") and m("docs")
    assert not m("tests/a.py") and not m("a/pyproject.toml") and not m("docsx")
    assert glob_matcher(["**/*.py"])("a.py") and glob_matcher(["**/*.py"])("x/y/a.py")
    assert parse_timeout("30m", "t") == 1800 and parse_timeout("1.5s", "t") == 1.5 and parse_timeout(2, "t") == 2
    for bad in ("soon", "-1m", 0, True):
        with pytest.raises(InvalidInput):
            parse_timeout(bad, "t")
    for bad in (b"[check.x]\n", b"[check.x]\ncommand = 1\n", b"check = 1\n", b"not toml ==",
                b'require_checks = "test"\n'):
        with pytest.raises(InvalidInput):
            parse_config(bad)
    c = parse_config(b'[check.t]\ncommand = "sh -c \'a && b\'"\nenv = ["X"]\n')
    assert c.checks["t"].argv == ["sh", "-c", "a && b"] and c.require == [] and c.checks["t"].timeout == 1800


def test_cli_check_json(tmp_path: Path) -> None:
    hif = Hif(tmp_path / "config")
    r = repo_with(tmp_path, toml(counting(tmp_path / "runs", 1), require=False))
    r.close()
    hif.run(r.root, "session", "start", "cli")
    doc = hif.js(r.root, "check", ok=False)
    assert doc["ok"] is False and doc["checks"][0]["status"] == "failed" and doc["checks"][0]["exit"] == 1
    assert set(doc) == {"session", "tree", "nix", "ok", "checks", "notes"}
    assert doc["notes"] == ["running without Nix (no flake.nix)"]
    shown = hif.js(r.root, "show", doc["session"])
    assert [(c["check"], c["status"], c["cached"]) for c in shown["checks"]] == [("test", "failed", False)]


# -- through a forge -------------------------------------------------------------------------------


def land_files(hif: Hif, cwd: Path, goal: str, files: dict[str, str], *, ok: bool | None = True) -> Any:
    hif.run(cwd, "session", "start", goal)
    for name, text in files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(text)
    return hif.js(cwd, "land", ok=ok)


def test_checks_through_a_forge(forge: Forge, tmp_path: Path) -> None:
    hif = Hif(tmp_path / "config")
    url = setup_repo(hif, forge, tmp_path)
    counter = tmp_path / "runs"
    a, b = tmp_path / "a", tmp_path / "b"
    hif.run(tmp_path, "clone", url, str(a))
    land_files(hif, a, "set up", {"hif.toml": toml(counting(counter)), "src/app.py": "print(1)\n"})
    hif.run(tmp_path, "clone", url, str(b))

    # the forge refuses a landing without an attestation, then accepts it with one
    hif.run(a, "session", "start", "change")
    (a / "src" / "app.py").write_text("print(2)\n")
    refused = hif.run(a, "land", ok=False)
    assert "passing, verified attestation of test" in refused.stderr
    doc = hif.js(a, "check")
    assert doc["ok"] and doc["checks"][0]["cached"] is False and counter.read_text() == "run\n"
    assert hif.js(a, "land")["position"] == 2

    # the same tree in another clone: a cache hit from the forge, attested by that clone
    hif.run(b, "pull")
    hif.run(b, "session", "start", "same tree")
    doc = hif.js(b, "check")
    assert doc["checks"][0]["cached"] is True and counter.read_text() == "run\n"

    # an attestation signed by a key not registered on the account is refused, so is the landing
    stranger = Hif(tmp_path / "other-config", HIF_TOKEN=forge.admin_token)
    (b / "src" / "app.py").write_text("print(3)\n")
    p = stranger.run(b, "check", ok=False)
    assert "is not registered" in p.stderr and p.returncode == 4
    assert "passing, verified attestation" in stranger.run(b, "land", ok=False).stderr
    assert hif.js(b, "check")["ok"]
    assert hif.js(b, "land")["position"] == 3

    # forged cache uploads and tampered attestations are refused by the forge
    t = forge.admin_token
    base = "/api/v1/repos/acme/api"
    entry = forge.api("GET", f"{base}/cache/checks/{doc['checks'][0]['input']}", t).data
    wrong = "00" * 32
    r = forge.api("PUT", f"{base}/cache/checks/{wrong}", t, {"result": entry["result"], "log": entry["log"]})
    assert r.status_code == 422 and "another input hash" in r.data["message"]
    r = forge.api("PUT", f"{base}/cache/checks/{doc['checks'][0]['input']}", t,
                  {"result": entry["result"], "log": entry["log"] + b"x"})
    assert r.status_code == 422
    assert forge.api("GET", f"{base}/cache/checks/{wrong}", t).status_code == 404
    sid = forge.api("POST", f"{base}/sessions", t, {"goal": "tamper"}).data["id"]
    shown = hif.js(b, "show", "3")
    # both cached: the stranger's run filled the cache even though its attestation was refused
    assert [(c["status"], c["cached"]) for c in shown["checks"]] == [("passed", True)] * 2
    landed = forge.api("GET", f"{base}/sessions/{shown['session']['id']}", t).data
    page = forge.api("GET", f"/acme/api/sessions/{shown['session']['id']}", t).text
    assert "Check test" in page and "passed" in page and "cached" in page
    assert "Check logs" in page and "print(3)" in page  # the check's output (it prints app.py)
    att_event = [e for e in landed["events"] if e["type"] == "attest"][-1]
    att = {**att_event["attestation"], "session": sid}  # replayed onto another session
    r = forge.api("POST", f"{base}/sessions/{sid}/attest", t,
                  {"attestation": att, "signature": att_event["signature"]})
    assert r.status_code == 400 and "bad signature" in r.data["message"]
    r = forge.api("POST", f"{base}/sessions/{sid}/events", t,
                  {"events": [{"type": "attest", "attestation": att}]})
    assert r.status_code == 400

    # an attestation for another tree than the one being landed: the forge refuses the landing
    hif.run(a, "pull")
    hif.run(a, "session", "start", "checked, then changed")
    (a / "src" / "app.py").write_text("print(4)\n")
    assert hif.js(a, "check")["ok"]
    (a / "src" / "app.py").write_text("print(5)\n")
    refused = hif.run(a, "land", ok=False)
    assert "for the session's tree" in refused.stderr
    assert hif.js(a, "check")["ok"]
    assert hif.js(a, "land")["position"] == 4
