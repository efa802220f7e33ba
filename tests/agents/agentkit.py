"""Running ``hif`` (and its agent hook) as a subprocess in a working copy, and reading back what the
session holds, for the coding-agent tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Hif:
    """``hif`` in one working copy, with its own config directory and author."""

    def __init__(self, cwd: Path, home: Path, **env: str) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "HIF_CONFIG_DIR": str(home), "HIF_AUTHOR": "ana",
                    "HIF_ROLE": "human", **env}
        self.env.pop("HIF_DEBUG", None)

    def run(self, *args: str, ok: bool = True, input: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        p = subprocess.run([sys.executable, "-m", "hif", *args], cwd=cwd or self.cwd, env=self.env,
                           input=input, capture_output=True, timeout=120)
        assert b"Traceback" not in p.stdout + p.stderr, (p.stdout + p.stderr).decode()
        if ok:
            assert p.returncode == 0, f"hif {args} -> {p.returncode}\n{p.stdout.decode()}\n{p.stderr.decode()}"
        return p

    def text(self, *args: str) -> str:
        return self.run(*args).stdout.decode()

    def js(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def hook(self, agent: str, event: str, payload: Any, *, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        """One hook call as the agent makes it: the input on stdin; it must exit 0 and print nothing
        the agent would misread (Claude Code: nothing; Gemini CLI: one JSON object)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        p = self.run("agent", "hook", agent, event, input=data, cwd=cwd)
        assert p.returncode == 0
        if agent == "gemini-cli":
            assert json.loads(p.stdout) == {}, p.stdout
        else:
            assert p.stdout == b"", p.stdout
        assert p.stderr == b"", p.stderr
        return p

    def state(self) -> dict[str, Any]:
        return json.loads((self.cwd / ".hif" / "state.json").read_text())

    def session(self) -> dict[str, Any]:
        """The open (or named) session as ``hif session show --json`` gives it."""
        return self.js("session", "show")["session"]

    def log(self) -> str:
        path = self.cwd / ".hif" / "agent-hook.log"
        return path.read_text() if path.exists() else ""
