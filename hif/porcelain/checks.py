"""The working-copy half of ``hif check``: run each declared check on the open session's exact
tree (in a scratch directory written from the working copy where it holds the same bytes), keep the
result in the local or the forge's cache, and sign an attestation per result. What a check *is*
(``hif.toml``, input hashes, results, attestations, the landing policy) is plumbing: :mod:`hif.checks`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hif import keys
from hif.checks import (
    RESULT,
    CheckError,
    CheckSpec,
    Config,
    LocalCache,
    Result,
    check_result,
    input_hash,
    read_config,
)
from hif.errors import CorruptObject, InvalidInput, NotFound
from hif.objects import (
    EXEC,
    LINK,
    blob_bytes,
    blob_id,
    digest,
    encode,
    pack,
    unpack,
)
from hif.paths import CHECKS_CONFIG
from hif.session import Session
from hif.tree import lookup_file, walk

if TYPE_CHECKING:
    from hif.forge.remote import RemoteRepo
    from hif.porcelain import Repository

T = TypeVar("T")





class ForgeCache:
    """The forge's cache (``GET/PUT .../cache/checks/<hash>``); answers are verified here too."""

    def __init__(self, repo: RemoteRepo, notes: list[str]) -> None:
        self.repo = repo
        self.notes = notes

    def _path(self, h: bytes) -> str:
        return f"{self.repo.api}cache/checks/{h.hex()}"

    async def get(self, h: bytes) -> Result | None:
        try:
            answer = self.repo.client.get(self._path(h))
        except NotFound:
            return None
        try:
            result = check_result(unpack(answer["result"]), answer["log"], h)
        except (CorruptObject, KeyError, TypeError) as e:
            self.notes.append(f"ignored a forged or damaged cache entry {h.hex()[:16]}: {e}")
            return None
        await self.repo.objects.put_canonical(unpack(answer["result"]))  # kept in .hif/cache
        return result

    async def put(self, h: bytes, value: dict[str, Any], log: bytes) -> bytes:
        canonical = encode([RESULT, value])
        body = {"result": pack(canonical), "log": pack(blob_bytes(log))}
        self.repo.client.request("PUT", self._path(h), body=body, idempotent=True)
        await self.repo.objects.put_canonical(canonical)
        return digest(canonical)


# -- running ---------------------------------------------------------------------------------------


def run_command(spec: CheckSpec, cwd: Path, *, nix: bool) -> tuple[int, float, bytes]:
    """Run the check in ``cwd``: (exit status, seconds, combined output). A missing command or a
    timeout raises CheckError (such a run is no result, so it is neither cached nor attested)."""
    argv = ["nix", "develop", "--command", *spec.argv] if nix else spec.argv
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise CheckError(f"check {spec.name}: command not found: {argv[0]}") from None
    except PermissionError:
        raise CheckError(f"check {spec.name}: command not executable: {argv[0]}") from None
    try:
        out, _ = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children too
        proc.communicate()
        raise CheckError(f"check {spec.name} timed out after {spec.timeout:g} s "
                         "(timeout in hif.toml); nothing was cached or attested") from None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, round(time.monotonic() - started, 3), out


async def materialize(r: Repository, tree: bytes, dest: Path) -> None:
    """Write the files of ``tree`` to ``dest``, from the working copy where it holds the same bytes."""
    async for path, entry in walk(r.repo.objects, tree):
        full = dest / path
        full.parent.mkdir(parents=True, exist_ok=True)
        src = r.root / path
        content: bytes | None = None
        try:
            content = os.fsencode(os.readlink(src)) if entry.kind == LINK else src.read_bytes()
        except OSError:
            content = None
        if content is None or blob_id(content) != entry.oid:
            content = await r.repo.objects.get_blob(entry.oid)
        if entry.kind == LINK:
            os.symlink(os.fsdecode(content), full)
        else:
            full.write_bytes(content)
            if entry.kind == EXEC:
                full.chmod(0o755)


# -- hif check -------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    check: str
    status: str  # passed | failed
    cached: bool
    exit: int
    duration: float
    input: bytes
    result: bytes
    log: bytes
    tree: bytes
    nix: bool
    output: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "cached": self.cached, "exit": self.exit,
                "duration": self.duration, "input": self.input.hex(), "result": self.result.hex(),
                "log": self.log.hex(), "tree": self.tree.hex(), "nix": self.nix}


@dataclass
class CheckRun:
    session: str
    tree: bytes
    nix: bool
    reports: list[CheckReport]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(r.status == "passed" for r in self.reports)

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session, "tree": self.tree.hex(), "nix": self.nix, "ok": self.ok,
                "checks": [r.to_json() for r in self.reports], "notes": self.notes}


def run_checks(r: Repository, s: Session, tree: bytes, names: list[str] | None, *, author: str,
               run: Callable[[Coroutine[Any, Any, T]], T],
               attest: Callable[[dict[str, Any], bytes], None]) -> CheckRun:
    """``hif check`` once the working copy is recorded in ``s`` (whose tree is ``tree``): run (or find
    cached) each check on that exact tree, sign an attestation per result and hand it to ``attest``
    (which appends it to the session). ``run`` drives a coroutine as the repository does."""
    config = run(read_config(r.repo, tree)) or Config({}, [])
    # a required check runs as the base's hif.toml defines it (the mainline's rule, like the
    # requirement itself): a session cannot pass it by editing its command
    base = run(read_config(r.repo, run(r.repo.mainline.tree_at(s.base))))
    for name in base.require if base is not None else []:
        if base is not None and name in base.checks:
            config.checks[name] = base.checks[name]
    if not config.checks:
        raise InvalidInput(f"no checks declared: add a [check.NAME] table to {CHECKS_CONFIG} at the "
                           "repository root")
    todo = list(names) if names else list(config.checks)
    unknown = [n for n in todo if n not in config.checks]
    if unknown:
        raise InvalidInput(f"no check named {', '.join(unknown)} in {CHECKS_CONFIG} "
                           f"(declared: {', '.join(config.checks)})")
    has_flake = run(lookup_file(r.repo.objects, tree, "flake.nix")) is not None
    nix = has_flake and shutil.which("nix") is not None
    notes: list[str] = []
    if not nix:
        notes.append("running without Nix" + (" (nix is not installed)" if has_flake else
                                              " (no flake.nix)"))
    cache: LocalCache | ForgeCache = ForgeCache(r.remote, notes) if r.remote is not None else LocalCache(r.repo, notes)
    key = keys.signing_key()
    public = bytes(key.verify_key)
    if r.remote is not None:
        signer = r.remote.client.get("whoami")["user"]
    else:
        signer = author
        run(keys.trust(r.store, signer, public))
    reports = []
    for name in todo:
        spec = config.checks[name]
        h = run(input_hash(r.repo, tree, spec, nix=nix))
        hit = run(cache.get(h))
        if hit is not None:
            value, rid, output, cached = hit.value, hit.id, hit.log, True
        else:
            with tempfile.TemporaryDirectory(prefix=f"hif-check-{name}-") as tmp:
                run(materialize(r, tree, Path(tmp)))
                code, seconds, output = run_command(spec, Path(tmp), nix=nix)
            value = {"input": h, "check": name, "exit": code, "duration": seconds,
                     "log": blob_id(output), "tree": tree, "nix": nix}
            rid = run(cache.put(h, value, output))
            cached = False
        att = {"repo": r.repo.name, "session": s.id, "tree": tree, "check": name, "input": h,
               "exit": value["exit"], "result": rid, "cached": cached, "duration": value["duration"],
               "command": spec.command, "signer": signer, "key": public, "time": r.repo.clock()}
        sig = bytes(key.sign(encode(att)).signature)
        attest(att, sig)
        reports.append(CheckReport(name, "passed" if value["exit"] == 0 else "failed", cached,
                                   value["exit"], value["duration"], h, rid, value["log"], tree, nix,
                                   output))
    return CheckRun(s.id, tree, nix, reports, notes)


