"""The tokens ``hif login`` keeps per forge (``credentials.json`` in the config directory, mode 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hif.errors import InvalidInput
from hif.forge.urls import normalize_url
from hif.keys import config_dir


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load_credentials() -> dict[str, dict[str, str]]:
    try:
        raw = json.loads(credentials_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InvalidInput(f"cannot read {credentials_path()}: {e}") from None
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, dict) and isinstance(v.get("token"), str)}


def save_credentials(creds: dict[str, dict[str, str]]) -> None:
    """Write atomically with mode 0600 from the start: the file holds bearer tokens."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(creds, indent=1, sort_keys=True) + "\n").encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def token_for(base: str) -> str | None:
    """``$HIF_TOKEN`` wins over the token stored by ``hif login``; None means anonymous."""
    env = os.environ.get("HIF_TOKEN")
    if env:
        return env
    entry = load_credentials().get(normalize_url(base))
    return entry["token"] if entry else None


def default_remote(remote: str | None) -> str:
    """The forge to talk to: the one named, else the only one logged in to."""
    if remote:
        return normalize_url(remote)
    forges = sorted(load_credentials())
    if len(forges) == 1:
        return forges[0]
    if not forges:
        raise InvalidInput("not logged in to any forge; run hif login URL, or name one with --remote URL")
    raise InvalidInput(f"logged in to several forges ({', '.join(forges)}); choose one with --remote URL")

