"""One repository inside a store: its objects, mainline and sessions under ``repos/<owner>/<name>/``
(or another prefix: a forge keeps read-only mirrors of remote repositories under ``mirrors/``)."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from hif.errors import InvalidInput, NotFound, PreconditionFailed
from hif.mainline import Mainline
from hif.objects import ObjectDB, decode, encode
from hif.rollups import Rollups
from hif.session import Clock, SessionStore
from hif.store.base import ObjectStore

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def check_repo_name(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise InvalidInput(f"repository names look like owner/name (letters, digits, . _ -), not {name!r}")
    return name


class Repo:
    """Plumbing handle: no working copy, no CLI, no HTTP; everything is async over the store."""

    # called by hif.landing.land before landing (a forge sets it: hif.checks' require_checks rule)
    land_policy: Any = None

    def __init__(self, store: ObjectStore, name: str, *, clock: Clock = time.time,
                 prefix: str | None = None) -> None:
        self.hedged = store.hedge_reads  # a store with a latency tail: slow calls are sent twice
        if store.hedge_reads:
            # only a store with a latency tail (S3) hedges its reads (start-up time)
            from hif.store.hedged import HedgedStore

            store = HedgedStore(store)
        self.store = store
        self.name = check_repo_name(name)
        self.prefix = prefix if prefix is not None else f"repos/{name}/"
        self.clock = clock
        self.objects = ObjectDB(store, self.prefix)
        self.mainline = Mainline(store, self.prefix)
        self.sessions = SessionStore(store, self.prefix, self.objects, clock)
        self.rollups = Rollups(self.mainline)
        # group landing: sessions whose landers let a follower wait in vain (hif.landing, a hint only)
        self.stale_intents: set[str] = set()
        self.background: set[Any] = set()  # best-effort tasks not waited for (hif.aio.detach)

    @property
    def meta_key(self) -> str:
        """Where the repository's metadata lives (its existence is the repository's)."""
        return self.prefix + "meta"

    async def create(self, **meta: Any) -> dict[str, Any]:
        """Create the repository's metadata; raises PreconditionFailed if it already exists."""
        value = {"name": self.name, "created": self.clock(), **meta}
        await self.store.put(self.meta_key, encode(value), if_none_match=True)
        return value

    async def meta(self) -> dict[str, Any]:
        data = await self.store.get_or_none(self.meta_key)
        if data is None:
            raise NotFound(f"no repository {self.name}")
        return decode(data)

    async def uncreate(self) -> None:
        """Remove what :meth:`create` wrote, for a creation refused after all (nothing else exists yet)."""
        await self.store.delete(self.meta_key)

    async def exists(self) -> bool:
        return await self.store.head(self.meta_key) is not None

    async def ensure(self, **meta: Any) -> None:
        with contextlib.suppress(PreconditionFailed):
            await self.create(**meta)
