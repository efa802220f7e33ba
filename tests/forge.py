"""A real forge node for tests: ``micelio serve`` in a subprocess on a loopback port.

Users and tokens are made with ``micelio admin`` against the same store before (or while) the node
runs, exactly as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
from s3server import free_port

START_TIMEOUT = 30.0
BIN = Path(sys.executable).parent


def micelio(*args: str, store: str, cache_dir: Path, env: dict[str, str] | None = None,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``micelio admin ...`` (or any micelio command) against a store."""
    cmd = [str(BIN / "micelio"), *args[:1], "--store", store, "--cache-dir", str(cache_dir), *args[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          input=input, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@dataclass
class Forge:
    """A running node and how to reach it."""

    url: str
    store: str
    root: Path
    admin_token: str
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def micelio(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return micelio(*args, store=self.store, cache_dir=self.root / "admin-cache", env=self.env,
                       check=check, input=input)

    def user(self, name: str, *, admin: bool = False, scope: str = "write", repo: str | None = None) -> str:
        """Create a user (if new) and return a fresh token for it."""
        if self.micelio("admin", "user", "list", "--json").stdout.find(f'"{name}"') < 0:
            self.micelio("admin", "user", "create", name, *(["--admin"] if admin else []))
        args = ["admin", "token", "create", name, "--scope", scope]
        if repo:
            args += ["--repo", repo]
        return self.micelio(*args).stdout.strip()

    def api(self, method: str, path: str, token: str | None = None, body: Any = None,
            url: str | None = None, **kw: Any) -> httpx.Response:
        """One CBOR request; the answer's body is decoded into ``response.data`` when it is CBOR."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = cbor2.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/cbor"
        r = httpx.request(method, (url or self.url) + path, headers=headers, content=content,
                          timeout=60, **kw)
        r.data = cbor2.loads(r.content) if r.headers.get("content-type", "").startswith("application/cbor") else None  # type: ignore[attr-defined]
        return r

    def start_replica(self) -> str:
        """Another ``micelio serve`` over the same store; returns its URL."""
        url = _serve(self, len(self.procs))
        return url

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _serve(forge: Forge, n: int) -> str:
    for _attempt in range(3):  # a port taken between choosing and binding: choose again
        port = free_port()
        log = open(forge.root / f"node-{n}.log", "wb")  # noqa: SIM115 - the process keeps it
        proc = subprocess.Popen(
            [str(BIN / "micelio"), "serve", "--store", forge.store, "--host", "127.0.0.1",
             "--port", str(port), "--cache-dir", str(forge.root / f"cache-{n}")],
            env={**os.environ, "MICELIO_AUTH_MAX_AGE": "0.2", **forge.env},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    forge.procs.append(proc)
                    forge.urls.append(url)
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    tail = (forge.root / f"node-{n}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"micelio serve did not start: {tail}")


def start_forge(root: Path, store: str | None = None, env: dict[str, str] | None = None) -> Forge:
    """A node over a fresh store (embedded under ``root`` unless ``store`` is given), with an admin."""
    root.mkdir(parents=True, exist_ok=True)
    forge = Forge(url="", store=store or str(root / "store"), root=root, admin_token="", env=env or {})
    forge.micelio("admin", "user", "create", "admin", "--admin")
    forge.admin_token = forge.micelio("admin", "token", "create", "admin", "--scope", "admin").stdout.strip()
    forge.url = _serve(forge, 0)
    return forge


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def refused_start(root: Path, env: dict[str, str]) -> str:
    """``micelio serve`` with ``env`` added to the environment, expected to refuse to start: its
    standard error once it has exited non-zero (an AssertionError if it is still up after 30 s)."""
    proc = subprocess.Popen(
        [str(BIN / "micelio"), "serve", "--store", str(root / "s"), "--port", str(free_port()),
         "--cache-dir", str(root / "c")],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the node started with {env}") from None
    assert proc.returncode != 0, (env, err)
    assert "Traceback" not in err, err
    return err
