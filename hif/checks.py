"""Checks: declared commands, a content-addressed result cache, and signed attestations.

A repository declares its checks in ``hif.toml`` at its root::

    require_checks = ["test"]            # landing needs a passing attestation of these
    [check.test]
    command = "python -m pytest -q"      # run without a shell (use sh -c '...' for one)
    inputs = ["src/**", "tests/**"]      # globs over repository paths; none = every file
    env = ["PYTHONHASHSEED"]             # environment variables whose values matter
    tools = ["python3 --version"]        # commands whose output matters
    timeout = "30m"                      # default 30 minutes

The *input hash* is SHA-256 over canonical CBOR of the sorted (path, kind, blob id) of the input
files in the session's tree, the command, the declared variables' values, the tools' output, the
flake.lock blob id (when the tree has a flake.nix) and whether Nix runs it. A result is an object
``["check", {"input", "check", "exit", "duration", "log": blob id, "tree", "nix"}]``; the cache index
``cache/checks/<input-hash>`` names it. Every read re-verifies the object's hash and that it answers
the input hash it is filed under, so a forged entry is reported and ignored, never used.

An *attestation* is the canonical CBOR map ``{"repo", "session", "tree", "check", "input", "exit",
"result", "cached", "duration", "command", "signer", "key", "time"}`` with the signer's Ed25519
signature, kept as an ``attest`` event of the session. With ``require_checks`` in the hif.toml of
the session's *base* tree (the mainline's rule: a session cannot drop it from its own tree), landing
needs, per required check, a passing attestation of the command the base defines for it, whose
signature verifies with a key trusted for its signer and whose tree is exactly the session's tree; and since the landed tree must be that tree, the mainline
must not have moved since the session's base (otherwise: sync, run the checks again, land).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hif import keys
from hif.errors import CorruptObject, HifError, InvalidInput, NotFound
from hif.objects import (
    LINK,
    Entry,
    check_object,
    decode,
    digest,
    encode,
    unpack,
)
from hif.paths import CHECKS_CONFIG
from hif.repo import Repo
from hif.session import Session
from hif.tree import apply, lookup_file, walk

RESULT = "check"  # object kind of a check result
DEFAULT_TIMEOUT = 30 * 60.0
TOOL_TIMEOUT = 60.0

# trusted(repo, event, attestation) -> whether the attestation's key may sign for its signer
Trust = Callable[[Repo, dict[str, Any], dict[str, Any]], Awaitable[bool]]
# policy(repo, session, effective changes, base tree) -> True when the landing is pinned to its base
Policy = Callable[[Repo, Session, dict[str, Entry | None], bytes], Awaitable[bool]]


class ChecksRequired(HifError):
    """Landing refused: a required check has no passing, verified attestation for this tree."""

    http_status = 409


class CheckError(HifError):
    """A check could not produce a result (missing command, timeout): nothing is cached."""


# -- hif.toml --------------------------------------------------------------------------------------


@dataclass
class CheckSpec:
    name: str
    command: str
    argv: list[str]
    inputs: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Config:
    checks: dict[str, CheckSpec]
    require: list[str]


def parse_timeout(value: Any, where: str) -> float:
    """Seconds from a number or a string like ``90s``, ``30m``, ``2h``."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: timeout must be a duration like 30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", value)):
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    else:
        raise InvalidInput(f"{where}: timeout must be a duration like 30m, not {value!r}")
    if seconds <= 0:
        raise InvalidInput(f"{where}: timeout must be positive")
    return seconds


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{where} must be a list of non-empty strings")
    return list(value)


def parse_config(data: bytes) -> Config:
    import tomllib  # only repositories with a hif.toml pay for it

    try:
        doc = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"{CHECKS_CONFIG}: {e}") from None
    table = doc.get("check", {})
    if not isinstance(table, dict):
        raise InvalidInput(f"{CHECKS_CONFIG}: [check] must be a table of named checks")
    checks: dict[str, CheckSpec] = {}
    for name, raw in table.items():
        where = f"{CHECKS_CONFIG} [check.{name}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("command"), str) or not raw["command"].strip():
            raise InvalidInput(f"{where} needs a command")
        try:
            argv = shlex.split(raw["command"])
        except ValueError as e:
            raise InvalidInput(f"{where}: command: {e}") from None
        checks[name] = CheckSpec(
            name, raw["command"], argv, _strings(raw.get("inputs"), f"{where} inputs"),
            _strings(raw.get("env"), f"{where} env"), _strings(raw.get("tools"), f"{where} tools"),
            parse_timeout(raw.get("timeout", DEFAULT_TIMEOUT), where),
        )
    require = _strings(doc.get("require_checks"), f"{CHECKS_CONFIG} require_checks")
    return Config(checks, require)


async def read_config(repo: Repo, tree: bytes) -> Config | None:
    entry = await lookup_file(repo.objects, tree, CHECKS_CONFIG)
    if entry is None or entry.kind == LINK:
        return None
    return parse_config(await repo.objects.get_blob(entry.oid))


# -- input hash ------------------------------------------------------------------------------------


def glob_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """``**`` spans directories, ``*`` and ``?`` stay within one; a plain path also names what is
    below it. No patterns: every file."""
    if not patterns:
        return lambda _path: True
    parts = []
    for p in patterns:
        p = p.strip("/")
        if not any(c in p for c in "*?["):
            parts.append(re.escape(p) + "(?:/.*)?")
            continue
        rx, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif p[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif p[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(p[i]), i + 1
        parts.append(rx)
    compiled = re.compile("|".join(f"(?:{x})" for x in parts))
    return lambda path: compiled.fullmatch(path) is not None


def run_tool(command: str) -> str:
    try:
        p = subprocess.run(shlex.split(command), capture_output=True, timeout=TOOL_TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise CheckError(f"tool version command {command!r} failed: {e}") from None
    if p.returncode != 0:
        raise CheckError(f"tool version command {command!r} exited with {p.returncode}")
    return (p.stdout + p.stderr).decode(errors="replace").strip()


async def input_hash(repo: Repo, tree: bytes, spec: CheckSpec, *, nix: bool,
                     environ: dict[str, str] | None = None) -> bytes:
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    wanted = glob_matcher(spec.inputs)
    files = [[p, e.kind, e.oid] async for p, e in walk(repo.objects, tree) if wanted(p)]
    flake = await lookup_file(repo.objects, tree, "flake.nix")
    lock = await lookup_file(repo.objects, tree, "flake.lock") if flake is not None else None
    doc = {
        "files": files,
        "command": spec.command,
        "env": {name: environ.get(name) for name in sorted(spec.env)},
        "tools": {cmd: run_tool(cmd) for cmd in spec.tools},
        "flake_lock": lock.oid if lock is not None else None,
        "nix": nix,
    }
    return hashlib.sha256(encode(doc)).digest()


# -- results and the cache -------------------------------------------------------------------------


@dataclass
class Result:
    id: bytes
    value: dict[str, Any]
    log: bytes


def check_result(canonical: bytes, log_stored: bytes | None, want_input: bytes) -> Result:
    """Verify a result object (and its log) filed under ``want_input``; CorruptObject otherwise."""
    value = check_object(RESULT, decode(canonical))
    if not isinstance(value, dict) or not isinstance(value.get("exit"), int) or not isinstance(
            value.get("log"), bytes) or not isinstance(value.get("duration"), int | float):
        raise CorruptObject("a check result is malformed")
    if value.get("input") != want_input:
        raise CorruptObject("the result is for another input hash")
    log = b""
    if log_stored is not None:
        log_canonical = unpack(log_stored)
        if digest(log_canonical) != value["log"]:
            raise CorruptObject("the log does not match the result")
        log = check_object("blob", decode(log_canonical))
        if not isinstance(log, bytes):
            raise CorruptObject("the log is not a blob")
    return Result(digest(canonical), value, log)


def cache_key(prefix: str, h: bytes) -> str:
    return f"{prefix}cache/checks/{h.hex()}"


class LocalCache:
    """``cache/checks/<hash>`` in the repository's own store."""

    def __init__(self, repo: Repo, notes: list[str]) -> None:
        self.repo = repo
        self.notes = notes

    async def get(self, h: bytes) -> Result | None:
        raw = await self.repo.store.get_or_none(cache_key(self.repo.prefix, h))
        if raw is None:
            return None
        try:
            index = decode(raw)
            rid = index["result"]
            canonical = await self.repo.objects.get_canonical(rid)
            value = check_object(RESULT, decode(canonical))
            log = await self.repo.store.get(self.repo.objects.key(value["log"]))
            return check_result(canonical, log, h)
        except (CorruptObject, NotFound, KeyError, TypeError, AttributeError) as e:
            self.notes.append(f"ignored a forged or damaged cache entry {h.hex()[:16]}: {e}")
            return None

    async def put(self, h: bytes, value: dict[str, Any], log: bytes) -> bytes:
        await self.repo.objects.put_blob(log)
        rid = await self.repo.objects.put_value(RESULT, value)
        await self.repo.store.put(cache_key(self.repo.prefix, h), encode({"result": rid}))
        return rid
# -- attestations ----------------------------------------------------------------------------------


def attestation_problem(att: Any, sig: Any, *, repo: str, session: str, tree: bytes) -> str | None:
    """Why an attestation does not hold for (repo, session, tree); None when it does (signature
    included, trust in the key excepted)."""
    if not isinstance(att, dict) or not all(k in att for k in ("check", "exit", "result", "key",
                                                                "signer", "input")):
        return "malformed attestation"
    if not keys.verify(att, sig, att["key"]):
        return "bad signature"
    if att.get("repo") != repo or att.get("session") != session:
        return "for another repository or session"
    if att.get("tree") != tree:
        return "for another tree"
    return None


async def verified_checks(repo: Repo, s: Session, tree: bytes, trusted: Trust) -> dict[str, dict[str, Any]]:
    """The latest verified attestation per check name of session ``s`` for ``tree``."""
    out: dict[str, dict[str, Any]] = {}
    for e in s.of_type("attest"):
        att, sig = e.get("attestation"), e.get("signature")
        if attestation_problem(att, sig, repo=repo.name, session=s.id, tree=tree) is not None:
            continue
        if not await trusted(repo, e, att):
            continue
        try:
            result = check_result(await repo.objects.get_canonical(att["result"]), None, att["input"])
        except (CorruptObject, NotFound, TypeError):
            continue
        if result.value["exit"] != att["exit"] or result.value.get("check") != att["check"]:
            continue
        out[att["check"]] = att
    return out


def make_policy(trusted: Trust) -> Policy:
    """The landing rule of ``require_checks`` with a way to trust keys (local store or forge)."""

    async def policy(repo: Repo, s: Session, ours: dict[str, Entry | None], base_tree: bytes) -> bool:
        entry = await lookup_file(repo.objects, base_tree, CHECKS_CONFIG)
        if entry is None:
            return False  # the common case costs one tree lookup
        config = parse_config(await repo.objects.get_blob(entry.oid))
        if not config.require:
            return False
        tree = await apply(repo.objects, base_tree, ours)
        ok = await verified_checks(repo, s, tree, trusted)
        missing = [n for n in config.require if n not in ok or ok[n]["exit"] != 0 or (
            n in config.checks and ok[n].get("command") != config.checks[n].command)]
        if missing:
            raise ChecksRequired(
                f"landing needs a passing, verified attestation of {', '.join(missing)} for the "
                f"session's tree {tree.hex()[:12]} (run: hif check)")
        return True

    return policy


async def local_trust(repo: Repo, e: dict[str, Any], att: dict[str, Any]) -> bool:
    signer = att.get("signer")
    return isinstance(signer, str) and "/" not in signer and signer != "" and att["key"] in (
        await keys.trusted_keys(repo.store, signer))


def local_policy() -> Policy:
    """Landing in a local store: keys are trusted when listed under ``keys/<signer>``."""
    return make_policy(local_trust)


def attest_summary(s: Session) -> list[dict[str, Any]]:
    """What ``hif show`` and the session page list: one row per attest event."""
    out = []
    for e in s.of_type("attest"):
        att = e.get("attestation")
        if not isinstance(att, dict):
            continue
        out.append({"check": att.get("check"), "status": "passed" if att.get("exit") == 0 else "failed",
                    "cached": bool(att.get("cached")), "exit": att.get("exit"),
                    "duration": att.get("duration"), "signer": att.get("signer"),
                    "tree": att["tree"].hex() if isinstance(att.get("tree"), bytes) else None,
                    "result": att["result"].hex() if isinstance(att.get("result"), bytes) else None,
                    "time": att.get("time")})
    return out
