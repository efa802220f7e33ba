"""Checks on the forge (docs/api.md): the shared result cache, signed attestations, users' keys,
and the ``require_checks`` rule on every landing through this node (see ``hif.checks``).

- ``GET/PUT .../cache/checks/<input-hash>``: a result object and its log; an upload is verified
  (both objects hash, the result answers that input hash, the log is the result's) before it is kept.
- ``POST .../sessions/<sid>/attest``: appends an ``attest`` event only if the signature verifies
  with a key registered on the caller's account, for this repository and session, and the result
  it names is here. The generic events route does not accept ``attest`` events.
- ``PUT /api/v1/keys``: registers the caller's public key (``hif login`` sends it).
- ``land_policy`` is the landing rule the composition root hands the node, so every landing (the
  land route, federation offers) is refused without the required attestations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hif.checks import RESULT, Policy, attestation_problem, cache_key, check_result, make_policy
from hif.errors import (
    CorruptObject,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from hif.objects import check_object, decode, encode, unpack
from hif.repo import Repo
from hif.session import make_event
from node.access import need_scope
from node.accounts import Accounts
from node.api.routing import REPO, SESSION, Ctx, load_session, route, session_role
from node.wire import MiB, field

CACHE = REPO + "/cache/checks/<hash>"


def land_policy(accounts: Callable[[], Accounts]) -> Policy:
    """The ``require_checks`` rule for every landing through the node (the land routes, federation
    offers): an attestation counts when its key is registered on the account of the user who
    appended it. ``accounts`` is read per landing: the node opens them when it starts."""

    async def trusted(repo: Repo, event: dict[str, Any], att: dict[str, Any]) -> bool:
        user = event.get("user")
        return isinstance(user, str) and att.get("signer") == user and att["key"] in (
            await accounts().user_keys(user))

    return make_policy(trusted)


def _input_hash(text: str) -> bytes:
    try:
        h = bytes.fromhex(text)
    except ValueError:
        h = b""
    if len(h) != 32:
        raise NotFound(f"no cache entry {text} (input hashes are 64 hex digits)")
    return h


@route("GET", CACHE, "read", agent=True)
async def get_cached(ctx: Ctx, hash: str) -> dict[str, Any]:
    want = _input_hash(hash)
    raw = await ctx.r.store.get_or_none(cache_key(ctx.r.prefix, want))
    if raw is None:
        raise NotFound(f"no cached result for {hash}")
    try:
        index = decode(raw)
        result = await ctx.r.store.get(ctx.r.objects.key(index["result"]))
        value = check_object(RESULT, decode(unpack(result)))
        log = await ctx.r.store.get(ctx.r.objects.key(value["log"]))
    except (CorruptObject, NotFound, KeyError, TypeError) as e:
        raise NotFound(f"no usable cached result for {hash} ({e})") from None
    return {"input": want, "result": result, "log": log, "by": index.get("by")}


@route("PUT", CACHE, "write", limit=64 * MiB, agent=True)
async def put_cached(ctx: Ctx, hash: str) -> dict[str, Any]:
    want = _input_hash(hash)
    stored_result = field(ctx.body, "result", bytes)
    stored_log = field(ctx.body, "log", bytes)
    try:
        result = check_result(unpack(stored_result), stored_log, want)
    except (CorruptObject, TypeError) as e:
        raise CorruptObject(f"cache entry refused: {e}") from None
    if not isinstance(result.value.get("check"), str) or not isinstance(result.value.get("tree"), bytes):
        raise CorruptObject("cache entry refused: a check result names its check and tree")
    for oid, stored in ((result.value["log"], stored_log), (result.id, stored_result)):
        with contextlib.suppress(PreconditionFailed):
            await ctx.r.store.put(ctx.r.objects.key(oid), stored, if_none_match=True)
    index = {"result": result.id, "by": ctx.user, "time": ctx.r.clock()}
    await ctx.r.store.put(cache_key(ctx.r.prefix, want), encode(index))
    return {"input": want, "result": result.id}


@route("POST", SESSION + "/attest", "write", agent=True)
async def attest(ctx: Ctx, sid: str) -> dict[str, Any]:
    await load_session(ctx, sid, open_only=True)
    att = field(ctx.body, "attestation", dict)
    sig = field(ctx.body, "signature", bytes)
    problem = attestation_problem(att, sig, repo=ctx.r.name, session=sid, tree=att.get("tree"))
    if problem is not None or not isinstance(att.get("tree"), bytes):
        raise InvalidInput(f"attestation refused: {problem or 'malformed attestation'}")
    if att["signer"] != ctx.user:
        raise PermissionDenied(f"attestation refused: signed as {att['signer']!r}, but the token is "
                               f"{ctx.user}'s")
    if att["key"] not in await ctx.node.auth.user_keys(ctx.user):
        raise PermissionDenied(f"attestation refused: key {att['key'].hex()[:16]} is not registered "
                               f"on {ctx.user}'s account (hif login registers it)")
    try:
        result = check_result(await ctx.r.objects.get_canonical(att["result"]), None, att["input"])
    except (CorruptObject, NotFound, TypeError) as e:
        raise InvalidInput(f"attestation refused: its result is not here ({e})") from None
    if result.value["exit"] != att["exit"] or result.value["check"] != att["check"]:
        raise InvalidInput("attestation refused: it does not say what its result says")
    author = field(ctx.body, "author", str, default=ctx.user)
    event = make_event("attest", author, session_role(ctx), ctx.r.clock(), attestation=att, signature=sig)
    event["user"] = ctx.user
    return {"event": await ctx.r.sessions.append(sid, event)}


@route("PUT", "/api/v1/keys", "user")
async def put_key(ctx: Ctx) -> dict[str, Any]:
    need_scope(ctx.principal, "write")
    key = field(ctx.body, "public_key", bytes)
    await ctx.node.auth.add_key(ctx.user, key)
    return {"user": ctx.user, "public_key": key}
