"""Where federation keeps its state in the node's store (all replicas share it).

```
_node/identity                        the node's Ed25519 seed (unless MICELIO_NODE_KEY is set)
_node/replay/<hour>/<sha256>          signatures already accepted (replay cache)
_fed/outbox/<due>-<position>-<id>     pending deliveries (see federation.delivery)
_fed/failed/<time>-<id>               deliveries that gave up
_fed/peers/<host>                     per-peer failures and circuit breaker
_fed/followers/<owner>/<name>/<hash>  who follows a local repository (actor, inbox)
_fed/announced/<owner>/<name>         the last position delivered to followers
_fed/following/<host>/<owner>/<name>  remote repositories this node follows (state, actor, inbox)
_fed/offers-out/<id>                  sessions offered to other nodes: where the record lives
_fed/offer-bundles/<id>               the signed bundle a target fetches
_fed/offers-in/<host>/<actor>/<id>    pending offers received, per remote host and actor (caps)
_fed/offer-rate/<host>/<time>-<id>    offers received from a host in the last hour (rate limit)
mirrors/<host>/<owner>/<name>/...     a read-only mirror (repository layout + envelopes/, sync)
repos/<owner>/<name>/offers/<id>      sessions offered to a local repository
repos/<owner>/<name>/offer-objects/<id>/objects/...  an offer's objects until it lands (or expires)
repos/<owner>/<name>/offers-sent/<session>/<id>   offers made from a local session, with outcome
```
"""

from __future__ import annotations

import hashlib
from typing import Any

from hif.errors import CorruptObject
from hif.objects import decode

FOLLOWERS = "_fed/followers/"
FOLLOWING = "_fed/following/"
ANNOUNCED = "_fed/announced/"
OFFERS_OUT = "_fed/offers-out/"
BUNDLES = "_fed/offer-bundles/"
OFFERS_IN = "_fed/offers-in/"
OFFER_RATE = "_fed/offer-rate/"


def follower_key(name: str, actor: str) -> str:
    return f"{FOLLOWERS}{name}/{hashlib.sha256(actor.encode()).hexdigest()[:24]}"


def following_key(host: str, name: str) -> str:
    return f"{FOLLOWING}{host}/{name}"


def announced_key(name: str) -> str:
    return f"{ANNOUNCED}{name}"


def offer_key(prefix: str, offer_id: str) -> str:
    return f"{prefix}offers/{offer_id}"


def shared_offer_id(object_url: str) -> str:
    """The id an offer goes by on both nodes, the offering one and the one reviewing it: derived
    from the offer object's URL, which names the offering node, so no node can take the ids of
    another's offers."""
    return hashlib.sha256(object_url.encode()).hexdigest()[:20]


def offer_sent_key(prefix: str, session: str, offer_id: str) -> str:
    return f"{prefix}offers-sent/{session}/{offer_id}"


def load_map(data: bytes | None) -> dict[str, Any] | None:
    """A stored CBOR map, or None when it is absent or damaged (federation state is rebuilt or
    refetched, never trusted blindly)."""
    if data is None:
        return None
    try:
        v = decode(data)
    except CorruptObject:
        return None
    return v if isinstance(v, dict) else None
