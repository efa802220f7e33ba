"""The ``micelio`` command: ``serve`` runs a node; ``admin`` manages users, tokens, orgs and
repositories directly in the store (no server needed, so it bootstraps the first admin too).

Every command takes ``--json``. Errors are one line ``error: ...`` on stderr (or ``{"error": ...}``
with ``--json``) and the error's exit code (1 by default), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from hif.cli.output import command, emit, run_guarded, size_text
from hif.cli.progress import CommitBar, TransferBar
from hif.errors import InvalidInput, NotFound, PreconditionFailed
from hif.repo import Repo
from hif.store import ObjectStore, open_store
from node.accounts import Accounts
from node.authdb import AuthDB
from node.config import DEFAULT_STORE, Config
from node.errors import Exists
from node.imports import import_repository
from node.principal import check_description, check_name, check_repo, check_scope

T = TypeVar("T")
F = Callable[..., Any]

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- plumbing shared by every command ------------------------------------------------------------


def when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def parse_scope(value: str) -> str:
    """``read|write|admin``; ``repo:X`` is accepted as an alias of ``X`` (bind with ``--repo``)."""
    return check_scope(value.removeprefix("repo:"))


def parse_duration(value: str) -> float | None:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` in seconds, or ``never`` (None)."""
    if value == "never":
        return None
    m = _DURATION.match(value)
    if m is None or int(m.group(1)) == 0:
        raise InvalidInput(f"invalid duration {value!r}: use e.g. 30d, 12h, 90m or never")
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def read_password() -> str:
    """One line from stdin (so ``echo pw | micelio admin user passwd alice --password-stdin``)."""
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise InvalidInput("no password on standard input")
    return password


@dataclass
class AdminOptions:
    store: str
    cache_dir: Path | None


def run_admin(body: Callable[[Accounts, ObjectStore], Awaitable[T]]) -> T:
    """Open the store and the auth database, run ``body`` in a fresh event loop, close both."""
    opts = click.get_current_context().find_object(AdminOptions)
    assert opts is not None

    async def main() -> T:
        store = open_store(opts.store, create=True)
        try:
            with contextlib.ExitStack() as stack:
                cache = opts.cache_dir
                if cache is None:  # a one-shot command needs no lasting cache
                    cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="micelio-")))
                db = AuthDB(store, cache)
                try:
                    return await body(Accounts(db), store)
                finally:
                    db.close()
        finally:
            await store.close()

    return asyncio.run(main())


# -- the command tree ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="micelio", prog_name="micelio")
def cli() -> None:
    """micelio: a forge node for hif repositories."""


@command(cli)
@click.option("--store", default=None, help="Store URL: a path or s3://bucket/prefix (default $MICELIO_STORE or ./data).")
@click.option("--host", default=None, help="Address to listen on (default $MICELIO_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default $MICELIO_PORT or 8000).")
@click.option("--cache-dir", default=None, help="This replica's local cache (default $MICELIO_CACHE_DIR or .micelio-cache).")
@click.option("--public-url", default=None, help="URL the node is reached at (default http://HOST:PORT).")
def serve(as_json: bool, store: str | None, host: str | None, port: int | None, cache_dir: str | None,
          public_url: str | None) -> None:
    """Run a node (one replica; replicas share only the store)."""
    config = Config.from_env(store=store, host=host, port=port, cache_dir=cache_dir, public_url=public_url)
    from node import server  # imported lazily: the web stack is slow to import and admin needs none

    server.run(config)


def _store_options(fn: F) -> F:
    """``--store`` and ``--cache-dir`` of the commands that work on the store directly."""
    fn = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="Local cache of the auth database (default $MICELIO_CACHE_DIR, else a temporary one).")(fn)
    return click.option("--store", default=None,
                        help="Store URL: a path or s3://bucket/prefix (default $MICELIO_STORE or ./data).")(fn)


def _admin_options(store: str | None, cache_dir: Path | None) -> AdminOptions:
    env_cache = os.environ.get("MICELIO_CACHE_DIR")
    return AdminOptions(
        store=store or os.environ.get("MICELIO_STORE") or DEFAULT_STORE,
        cache_dir=cache_dir or (Path(env_cache) if env_cache else None),
    )


@cli.group()
@_store_options
@click.pass_context
def admin(ctx: click.Context, store: str | None, cache_dir: Path | None) -> None:
    """Manage users, tokens, organisations and repositories directly in the store."""
    ctx.obj = _admin_options(store, cache_dir)


# -- users -----------------------------------------------------------------------------------------


@admin.group()
def user() -> None:
    """Users: create, list, change a password, disable, sign out everywhere."""


@command(user, "create")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="A site admin (owner of every repository).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
def user_create(as_json: bool, name: str, is_admin: bool, password_stdin: bool) -> None:
    """Create a user; a generated password is printed once."""
    check_name(name, "user name")
    given = read_password() if password_stdin else None

    async def body(accounts: Accounts, store: ObjectStore) -> str:
        return await accounts.create_user(name, given, admin=is_admin)

    password = run_admin(body)
    doc: dict[str, Any] = {"name": name, "admin": is_admin}
    if given is None:
        doc["password"] = password
    emit(as_json, doc, f"created user {name}" + ("" if given is not None else f"; password: {password}"))


@command(user, "list")
def user_list(as_json: bool) -> None:
    """List users."""

    async def body(accounts: Accounts, store: ObjectStore) -> list[dict[str, Any]]:
        return await accounts.list_users()

    users = run_admin(body)
    emit(as_json, {"users": users}, lambda: "\n".join(
        f"{u['name']:<24} {'admin' if u['admin'] else 'user':<6} {'disabled' if u['disabled'] else '':<9}"
        f"created {when(u['created'])}".rstrip()
        for u in users
    ))


@command(user, "passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the new password from stdin.")
def user_passwd(as_json: bool, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    password = read_password()

    async def body(accounts: Accounts, store: ObjectStore) -> None:
        await accounts.set_password(name, password)

    run_admin(body)
    emit(as_json, {"name": name}, f"password of {name} changed")


@command(user, "disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Re-enable instead.")
def user_disable(as_json: bool, name: str, enable: bool) -> None:
    """Disable a user: their password and every token stop working, their browser sessions end."""

    async def body(accounts: Accounts, store: ObjectStore) -> None:
        await accounts.set_disabled(name, not enable)

    run_admin(body)
    emit(as_json, {"name": name, "disabled": not enable}, f"{'enabled' if enable else 'disabled'} user {name}")


@command(user, "signout")
@click.argument("name")
def user_signout(as_json: bool, name: str) -> None:
    """Sign a user out everywhere: end every browser session (API tokens stay; revoke those)."""

    async def body(accounts: Accounts, store: ObjectStore) -> int:
        return await accounts.end_web_sessions(name)

    ended = run_admin(body)
    emit(as_json, {"name": name, "ended": ended}, f"ended {ended} browser session(s) of {name}")


# -- tokens ----------------------------------------------------------------------------------------


@admin.group()
def token() -> None:
    """API tokens: create, list, revoke."""


@command(token, "create")
@click.argument("user_name", metavar="USER")
@click.option("--scope", "scope_text", required=True, metavar="SCOPE",
              help="read, write or admin (repo:read, repo:write, repo:admin are aliases).")
@click.option("--repo", default=None, metavar="OWNER/NAME", help="Bind the token to one repository.")
@click.option("--expires", default="never", show_default=True, help="Lifetime: 30d, 12h, 90m, or never.")
@click.option("--name", "token_name", default="", help="A label to recognise the token by.")
def token_create(as_json: bool, user_name: str, scope_text: str, repo: str | None, expires: str,
                 token_name: str) -> None:
    """Create a token and print its secret alone (shown once): TOKEN=$(micelio admin token create ...)."""
    scope = parse_scope(scope_text)
    lifetime = parse_duration(expires)
    if repo is not None:
        check_repo(repo)

    async def body(accounts: Accounts, store: ObjectStore) -> tuple[str, str]:
        return await accounts.create_token(user_name, scope=scope, repo=repo, name=token_name,
                                           expires_in=lifetime)

    token_id, secret = run_admin(body)
    expires_at = None if lifetime is None else time.time() + lifetime
    emit(as_json, {"id": token_id, "token": secret, "user": user_name, "scope": scope, "repo": repo,
                   "name": token_name, "expires": expires_at}, secret)


@command(token, "list")
@click.argument("user_name", metavar="USER")
def token_list(as_json: bool, user_name: str) -> None:
    """List a user's tokens (never their secrets)."""

    async def body(accounts: Accounts, store: ObjectStore) -> list[dict[str, Any]]:
        if await accounts.get_user(user_name) is None:
            raise NotFound(f"no user {user_name}")
        return await accounts.list_tokens(user_name)

    tokens = run_admin(body)

    def text() -> str:
        lines = []
        for t in tokens:
            state = "revoked" if t["revoked"] is not None else f"expires {when(t['expires'])}"
            bound = t["repo"] or "*"
            lines.append(f"{t['id']}  {t['scope']:<5}  {bound:<24} {state:<28} {t['name']}".rstrip())
        return "\n".join(lines)

    emit(as_json, {"tokens": tokens}, text)


@command(token, "revoke")
@click.argument("token_id", metavar="ID")
def token_revoke(as_json: bool, token_id: str) -> None:
    """Revoke a token (it stops working on every replica within a second)."""

    async def body(accounts: Accounts, store: ObjectStore) -> None:
        await accounts.revoke_token(token_id)

    run_admin(body)
    emit(as_json, {"revoked": token_id}, f"revoked token {token_id}")


# -- organisations ---------------------------------------------------------------------------------


@admin.group()
def org() -> None:
    """Organisations: create, set members."""


@command(org, "create")
@click.argument("name")
@click.option("--owner", required=True, help="Its first owner (an existing user).")
def org_create(as_json: bool, name: str, owner: str) -> None:
    """Create an organisation."""

    async def body(accounts: Accounts, store: ObjectStore) -> None:
        await accounts.create_org(name, owner)

    run_admin(body)
    emit(as_json, {"name": name, "owner": owner}, f"created organisation {name} (owner {owner})")


@command(org, "member")
@click.argument("name")
@click.argument("user_name", metavar="USER")
@click.argument("role", metavar="ROLE")
def org_member(as_json: bool, name: str, user_name: str, role: str) -> None:
    """Give USER a ROLE in organisation NAME (reader, writer, maintainer, owner), or 'none' to remove."""
    set_member(as_json, "org", name, user_name, role)


def set_member(as_json: bool, kind: str, name: str, user_name: str, role: str) -> None:
    """``org member`` and ``repo member``: give USER a ROLE on ``kind`` NAME, or remove them ('none')."""

    async def body(accounts: Accounts, store: ObjectStore) -> None:
        if role == "none":
            await getattr(accounts, f"remove_{kind}_member")(name, user_name)
        else:
            await getattr(accounts, f"set_{kind}_member")(name, user_name, role)

    run_admin(body)
    emit(as_json, {kind: name, "user": user_name, "role": None if role == "none" else role},
         f"{user_name} is {'no longer a member' if role == 'none' else role} of {name}")


# -- repositories ----------------------------------------------------------------------------------


@admin.group()
def repo() -> None:
    """Repositories: create, set members."""


@command(repo, "create")
@click.argument("name", metavar="OWNER/NAME")
@click.option("--private", is_flag=True, help="Only members can read it (default: public).")
@click.option("--owner", "owner_user", default=None, help="A user who becomes an owner of the repository.")
@click.option("--description", default="", help="One line about it.")
def repo_create(as_json: bool, name: str, private: bool, owner_user: str | None, description: str) -> None:
    """Create a repository in the store and register it (an existing store part is kept)."""
    check_repo(name)
    namespace = name.split("/")[0]

    async def body(accounts: Accounts, store: ObjectStore) -> dict[str, Any]:
        # check first, so a refused command leaves the store as it was
        check_description(description)
        if await accounts.get_repo(name) is not None:
            raise Exists(f"repository {name} exists")
        is_user = await accounts.get_user(namespace) is not None
        if not is_user and await accounts.get_org(namespace) is None:
            raise NotFound(f"no user or organisation {namespace}")
        if owner_user is not None and await accounts.get_user(owner_user) is None:
            raise NotFound(f"no user {owner_user}")
        with contextlib.suppress(PreconditionFailed):  # the store part exists: register only
            await Repo(store, name).create(private=private, description=description)
        owner = owner_user if owner_user is not None else (namespace if is_user else None)
        return await accounts.register_repo(name, private=private, owner_user=owner, description=description)

    meta = run_admin(body)
    emit(as_json, meta, f"created repository {name} ({'private' if private else 'public'})")


def _import_options(fn: F) -> F:
    """The arguments and options ``micelio import`` and ``micelio admin repo import`` share."""
    for deco in reversed([
        click.argument("name", metavar="OWNER/NAME"),
        click.argument("source", metavar="SOURCE"),
        click.option("--branch", default=None, help="Branch to import (default: the one HEAD names)."),
        click.option("--private", is_flag=True, help="Only members can read it (default: public)."),
        click.option("--owner", "owner_user", default=None, help="A user who becomes an owner of the repository."),
        click.option("--description", default="", help="One line about it."),
        click.option("--max-commits", type=click.IntRange(min=1), default=None, hidden=True,
                     help="Stop after landing N commits (to test resuming)."),
    ]):
        fn = deco(fn)
    return fn


def _import(as_json: bool, name: str, source: str, branch: str | None, private: bool,
            owner_user: str | None, description: str, max_commits: int | None) -> None:
    bar = CommitBar("importing") if TransferBar.wanted(as_json) else None

    async def body(accounts: Accounts, store: ObjectStore) -> dict[str, Any]:
        return await import_repository(accounts, store, name, source, branch=branch, private=private,
                                       owner_user=owner_user, description=description,
                                       max_commits=max_commits, progress=bar)

    try:
        doc = run_admin(body)
    finally:
        if bar is not None:
            bar.close()
    res = doc["import"]
    emit(as_json, doc, f"imported {res['commits']} commit(s) of {source} into {name}: positions "
                       f"{res['start'] + 1}-{res['position']}" if res["commits"] else
                       f"{name} is up to date with {source} at position {res['position']}")


@command(repo, "import")
@_import_options
def repo_import(as_json: bool, name: str, source: str, branch: str | None, private: bool,
                owner_user: str | None, description: str, max_commits: int | None) -> None:
    """Import the history of a git repository (SOURCE: a path or URL) into OWNER/NAME.

    The repository is created and registered if it does not exist yet; running the command again
    continues an interrupted import or adds the commits made since (as hif import git does).
    """
    _import(as_json, name, source, branch, private, owner_user, description, max_commits)


@command(cli, "import")
@_store_options
@_import_options
def import_git_repo(as_json: bool, store: str | None, cache_dir: Path | None, name: str, source: str,
                    branch: str | None, private: bool, owner_user: str | None, description: str,
                    max_commits: int | None) -> None:
    """Import a git repository (SOURCE: a path or URL) into OWNER/NAME on this node's store.

    The same as micelio admin repo import: the repository is created and registered if needed,
    and a rerun continues an interrupted import or adds the commits made since.
    """
    click.get_current_context().obj = _admin_options(store, cache_dir)
    _import(as_json, name, source, branch, private, owner_user, description, max_commits)


@command(repo, "member")
@click.argument("name", metavar="OWNER/NAME")
@click.argument("user_name", metavar="USER")
@click.argument("role", metavar="ROLE")
def repo_member(as_json: bool, name: str, user_name: str, role: str) -> None:
    """Give USER a ROLE on the repository (reader, writer, maintainer, owner), or 'none' to remove."""
    set_member(as_json, "repo", name, user_name, role)


# -- federation ------------------------------------------------------------------------------------


def run_store(body: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """Open the store alone (federation state needs no auth database), run ``body``, close it."""
    opts = click.get_current_context().find_object(AdminOptions)
    assert opts is not None

    async def main() -> T:
        store = open_store(opts.store, create=True)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


@cli.group()
@click.option("--store", default=None,
              help="Store URL: a path or s3://bucket/prefix (default $MICELIO_STORE or ./data).")
@click.option("--cache-dir", default=None, hidden=True)
@click.pass_context
def federation(ctx: click.Context, store: str | None, cache_dir: str | None) -> None:
    """Follow remote repositories and watch deliveries (on the store; the running node sends)."""
    ctx.obj = AdminOptions(store=store or os.environ.get("MICELIO_STORE") or DEFAULT_STORE,
                           cache_dir=None)


@command(federation, "follow")
@click.argument("url")
def federation_follow(as_json: bool, url: str) -> None:
    """Follow the repository at URL (http(s)://host/owner/name); its mirror fills once accepted."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import control

    entry = run_store(lambda store: control.follow(store, url))
    emit(as_json, entry, f"following {entry['name']} on {entry['host']} ({entry['state']}); "
                         f"mirror: mirrors/{entry['host']}/{entry['name']}")


@command(federation, "unfollow")
@click.argument("url")
def federation_unfollow(as_json: bool, url: str) -> None:
    """Stop following; the mirror stays, read-only, as it was."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import control

    entry = run_store(lambda store: control.unfollow(store, url))
    emit(as_json, entry, f"unfollowed {entry['name']} on {entry['host']}")


@command(federation, "followers")
@click.argument("name", metavar="OWNER/NAME")
def federation_followers(as_json: bool, name: str) -> None:
    """Who follows a local repository."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import status

    check_repo(name)
    rows = run_store(lambda store: status.followers(store, name))
    emit(as_json, {"repo": name, "followers": rows},
         lambda: "\n".join(f"{r['actor']}  since {when(r['since'])}" for r in rows)
         or "no followers")


def run_federation(body: Callable[[Any, ObjectStore], Awaitable[T]]) -> T:
    """Run ``body`` with a worker-less ``Federation`` over the store: what it queues names the node
    as ``$node`` and the running node's worker fills in its URL when it sends."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation.service import Federation

    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation.settings import FedSettings

    async def with_fed(store: ObjectStore) -> T:
        async def no_info(name: str) -> None:
            return None

        fed = Federation(store, "$node", FedSettings.from_env(), repo_info=no_info,
                         local_repo=lambda name: Repo(store, name),
                         node_key=os.environ.get("MICELIO_NODE_KEY"))
        await fed.start(worker=False)
        try:
            return await body(fed, store)
        finally:
            await fed.stop()

    return run_store(with_fed)


@command(federation, "offers")
@click.argument("name", metavar="OWNER/NAME")
def federation_offers(as_json: bool, name: str) -> None:
    """Sessions other nodes offered to a local repository."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import offers

    check_repo(name)
    rows = run_store(lambda store: offers.list_offers(Repo(store, name)))
    total = offers.total_size(rows)
    emit(as_json, {"repo": name, "offers": rows, "total_size": total}, lambda: "\n".join(
        [f"{o['id']}  {o['state']:<9} {size_text(o.get('size') or 0):>10}  {o['author']}@{o['origin']}  "
         f"{o['goal']}" + (f"  (position {o['position']})" if o.get("position") else "")
         for o in rows] + [f"total: {len(rows)} offer(s), {size_text(total)}"])
        if rows else "no offers")


@command(federation, "land-offer")
@click.argument("name", metavar="OWNER/NAME")
@click.argument("offer_id", metavar="ID")
@click.option("--as", "user_name", required=True, help="The maintainer landing it (recorded).")
def federation_land_offer(as_json: bool, name: str, offer_id: str, user_name: str) -> None:
    """Land an offered session; the outcome is delivered back to the offering node."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import offers

    check_repo(name)
    doc = run_federation(lambda fed, store: offers.land_offer(fed, Repo(store, name), offer_id,
                                                              user_name))
    emit(as_json, doc, f"landed offer {offer_id} at position {doc['position']}")


@command(federation, "reject-offer")
@click.argument("name", metavar="OWNER/NAME")
@click.argument("offer_id", metavar="ID")
@click.option("--as", "user_name", required=True, help="The maintainer rejecting it (recorded).")
@click.option("--reason", default="rejected", help="Told to the offering node.")
def federation_reject_offer(as_json: bool, name: str, offer_id: str, user_name: str,
                            reason: str) -> None:
    """Reject an offered session; the offering node is told why."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import offers

    check_repo(name)
    doc = run_federation(lambda fed, store: offers.reject_offer(fed, Repo(store, name), offer_id,
                                                                user_name, reason))
    emit(as_json, doc, f"rejected offer {offer_id}")


@command(federation, "status")
def federation_status(as_json: bool) -> None:
    """Followed repositories, pending and failed deliveries, and peers whose circuit is open."""
    # lazily: federation adds ~85 ms to the start of every micelio command
    from federation import status

    doc = run_store(lambda store: status.summary(store))

    def text() -> str:
        lines = ["following:"]
        for m in doc["following"]:
            err = f"  error: {m['error']}" if m["error"] else ""
            if m.get("reason") and m["state"] in ("failed", "rejected", "pending"):
                err += f"  {'reason' if m['state'] != 'pending' else 'last error'}: {m['reason']}"
            conflicts = f"  conflicts: {m['conflicts']}" if m["conflicts"] else ""
            lines.append(f"  {m['host']}/{m['name']:<30} {m['state']:<10} head {m['head']:<6} "
                         f"synced {when(m['last_sync'])}{conflicts}{err}")
        lines.append(f"outbox: {len(doc['outbox'])} pending")
        for d in doc["outbox"]:
            due = "sending now" if d.get("sending") else f"due {when(d['due'])}"
            lines.append(f"  {d['what']} -> {d['peer']}  tries {d['tries']}  {due}"
                         + (f"  last error: {d['error']}" if d["error"] else ""))
        lines.append(f"failed: {len(doc['failed'])}")
        for d in doc["failed"]:
            lines.append(f"  {d['what']} -> {d['peer']}  {d['error']}")
        for p in doc["peers"]:
            if p["circuit"] == "open" or p["consecutive"]:
                lines.append(f"peer {p['peer']}: {p['consecutive']} failures in a row, circuit "
                             f"{p['circuit']}; last error: {p['last_error']}")
        return "\n".join(lines)

    emit(as_json, doc, text)


def main() -> None:
    run_guarded(cli, "micelio", "MICELIO_DEBUG")


if __name__ == "__main__":
    main()
