"""What a user does with a forge account: log in and out, create and list repositories, register the
signing key."""

from __future__ import annotations

from typing import Any

from hif.errors import InvalidInput, RemoteError
from hif.forge.client import MAX_PAGES, ForgeClient, field_of
from hif.forge.credentials import default_remote, load_credentials, save_credentials, token_for
from hif.forge.urls import normalize_url
from hif.keys import public_key
from hif.repo import check_repo_name
from hif.session import check_text


def login(url: str, token: str) -> dict[str, Any]:
    """Check the token with ``whoami`` and keep it for ``url``; returns ``{"url", "user"}``."""
    base = normalize_url(url)
    token = token.strip()
    if not token:
        raise InvalidInput("the token must not be empty")
    with ForgeClient(base, token) as client:
        who = client.get("whoami")
    user = field_of(who, "user", str)
    creds = load_credentials()
    creds[base] = {"token": token, "user": user}
    save_credentials(creds)
    return {"url": base, "user": user}


def logout(url: str) -> dict[str, Any]:
    base = normalize_url(url)
    creds = load_credentials()
    removed = creds.pop(base, None) is not None
    if removed:
        save_credentials(creds)
    return {"url": base, "removed": removed}


def create_repo(name: str, *, private: bool = False, description: str | None = None,
                remote: str | None = None) -> dict[str, Any]:
    """Create ``owner/name`` on a forge; returns its metadata plus ``remote`` and clone ``url``."""
    check_repo_name(name)
    base = default_remote(remote)
    body: dict[str, Any] = {"name": name, "private": private}
    if description:
        body["description"] = check_text(description, "description")
    with ForgeClient(base, token_for(base)) as client:
        meta = client.post("repos", body)
    if not isinstance(meta, dict):
        raise RemoteError(f"{base} sent an answer hif cannot read")
    return {**meta, "remote": base, "url": f"{base}/{name}"}


def list_repos(remote: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    base = default_remote(remote)
    out: list[dict[str, Any]] = []
    after: str | None = None
    with ForgeClient(base, token_for(base)) as client:
        for _ in range(MAX_PAGES):
            page = client.get("repos", limit=100, after=after)
            out += field_of(page, "repos", list)
            after = page.get("next")
            if not after:
                break
    return base, out


# -- the HTTP client ---------------------------------------------------------------------------



def register_on_forge(base: str) -> bytes:
    """Register the user's public key on the account of the token kept for ``base``."""
    key = public_key()
    with ForgeClient(base, token_for(base)) as client:
        client.request("PUT", "keys", body={"public_key": key}, idempotent=True)
    return key
