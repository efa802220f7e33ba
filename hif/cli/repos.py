"""Commands that make, clone and share repositories: init, workspace add, login/logout, repo
create/list, clone, offer."""

from __future__ import annotations

import click

from hif.cli.app import cli, remote_option, repo
from hif.cli.output import command, emit, size_text
from hif.cli.progress import TransferBar
from hif.errors import HifError, InvalidInput
from hif.porcelain import Repository

# -- init / workspace ----------------------------------------------------------------------------


@command(cli)
@click.argument("directory", default=".")
@click.option("--store", default=None, help="Store URL: a path (default DIR/.hif/store) or s3://bucket/prefix.")
@click.option("--name", default=None, help="Repository name as owner/name (default local/DIR).")
def init(as_json: bool, directory: str, store: str | None, name: str | None) -> None:
    """Create a repository and its working copy in DIRECTORY."""
    with Repository.init(directory, store=store, name=name) as r:
        emit(as_json, {"root": str(r.root), "repo": r.name, "store": r.config["store"]},
             f"initialised {r.name} in {r.root}")


@cli.group()
def workspace() -> None:
    """Several working copies over one store."""


@command(workspace, "add")
@click.argument("directory")
def workspace_add(as_json: bool, directory: str) -> None:
    """Add another working copy of this repository in DIRECTORY (at the head)."""
    with repo(as_json) as r, r.add_workspace(directory) as w:
        emit(as_json, {"root": str(w.root), "position": w.position}, f"workspace {w.root} at position {w.position}")


# -- forges --------------------------------------------------------------------------------------


@command(cli)
@click.argument("url")
@click.option("--token", prompt=True, hide_input=True, help="An API token (mcl_...) of the forge.")
def login(as_json: bool, url: str, token: str) -> None:
    """Check a token with the forge at URL and keep it for later commands (in credentials.json, 0600)."""
    # httpx costs about 30 ms of start-up: only what talks to a forge loads it
    from hif.forge.account import login as remote_login

    who = remote_login(url, token)
    from hif.forge.account import register_on_forge  # the key that signs attestations (hif check)

    note = ""
    try:
        who["public_key"] = register_on_forge(who["url"]).hex()
    except HifError as e:  # a read-only token, an older forge: logging in still worked
        who["public_key"] = None
        note = f"\nthe signing key was not registered ({e}); hif check attestations will be refused"
    emit(as_json, who, f"logged in to {who['url']} as {who['user']}{note}")


@command(cli)
@click.argument("url")
def logout(as_json: bool, url: str) -> None:
    """Forget the token kept for the forge at URL."""
    # httpx costs about 30 ms of start-up: only what talks to a forge loads it
    from hif.forge.account import logout as remote_logout

    out = remote_logout(url)
    emit(as_json, out, f"logged out of {out['url']}" if out["removed"] else f"not logged in to {out['url']}")


@cli.group("repo")
def repo_group() -> None:
    """Repositories on a forge."""


@command(repo_group, "create")
@click.argument("name")
@click.option("--private", is_flag=True, help="Only members can read it (default: public).")
@click.option("--description", default=None, help="One line about the repository.")
@remote_option
def repo_create(as_json: bool, name: str, private: bool, description: str | None, remote: str | None) -> None:
    """Create repository NAME (owner/name) on a forge."""
    # httpx costs about 30 ms of start-up: only what talks to a forge loads it
    from hif.forge.account import create_repo

    meta = create_repo(name, private=private, description=description, remote=remote)
    emit(as_json, meta, f"created {'private' if meta.get('private') else 'public'} repository "
                        f"{meta['name']} on {meta['remote']}\nclone it with: hif clone {meta['url']}")


@command(repo_group, "list")
@remote_option
def repo_list(as_json: bool, remote: str | None) -> None:
    """Repositories of a forge that you can read."""
    # httpx costs about 30 ms of start-up: only what talks to a forge loads it
    from hif.forge.account import list_repos

    base, repos = list_repos(remote)

    def text() -> str:
        if not repos:
            return f"no repositories on {base}"
        return "\n".join(f"{r['name']:<40} {'private' if r.get('private') else 'public ':<8} "
                         f"head {r.get('head', 0):<6} {r.get('description') or ''}" for r in repos)

    emit(as_json, {"remote": base, "repos": repos}, text)


@command(cli)
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--sparse", "sparse", multiple=True, metavar="DIR",
              help="Check out only this directory (repeatable) and the root files.")
def clone(as_json: bool, url: str, directory: str | None, sparse: tuple[str, ...]) -> None:
    """Make a working copy of the forge repository at URL (http(s)://host/owner/name) in DIRECTORY.

    Running it again on an interrupted clone fetches only what is still missing. With --sparse only
    the tree objects and files inside those directories are fetched; other files are read on demand
    (hif cat, hif ls) and cannot be changed from this working copy.
    """
    bar = TransferBar() if TransferBar.wanted(as_json) else None
    try:
        r = Repository.clone(url, directory, progress=bar, sparse=list(sparse) or None)
    finally:
        if bar is not None:
            bar.close()
    with r:
        assert r.remote is not None
        objs = r.remote.objects
        doc = {"root": str(r.root), "repo": r.name, "remote": r.remote.client.base_url,
               "position": r.position, "resumed": r.resumed, "fetched_objects": objs.fetched_objects,
               "sparse": r.cone.cones if r.cone else None,
               "fetched_bytes": objs.fetched_bytes}
        emit(as_json, doc, f"{'finished cloning' if r.resumed else 'cloned'} {r.name} into {r.root} at "
                           f"position {r.position} ({objs.fetched_objects} objects, "
                           f"{size_text(objs.fetched_bytes)} fetched)")


# -- federation: offering a session to a repository on another forge ----------------------------


@command(cli)
@click.argument("url")
def offer(as_json: bool, url: str) -> None:
    """Offer the open session to the repository at URL on another forge (your forge sends it,
    signed); its maintainers land or reject it, and the outcome comes back to your forge."""
    with repo(as_json) as r:
        sid = r.session_id
        if r.remote is None:
            raise InvalidInput("hif offer needs a clone of a forge repository (hif clone URL)")
        if sid is None:
            raise InvalidInput("no open session to offer (hif session start GOAL)")
        r.record()  # the working copy's changes go into the session first
        doc = r.remote.offer(sid, url)
        emit(as_json, doc, f"offered session {sid} to {doc.get('target', url)} "
                           f"(offer {doc.get('id')}); the outcome will show on your forge")


