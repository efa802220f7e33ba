"""HTTP Message Signatures (RFC 9421) with Ed25519, through the ``http-message-signatures`` library.

Canonicalisation is the library's, not ours: a hand-rolled signature base is where federation
implementations have gone wrong. Outgoing requests cover ``@method``, ``@target-uri`` and, with a
body, ``content-digest`` (RFC 9530, SHA-256), with ``created`` and ``keyid`` (the actor's key URL).
Incoming requests must cover the same components; the digest is recomputed from the bytes received;
``created`` must be within ±5 minutes; and a signature is accepted once (replay cache in the store,
shared by all replicas), keyed on what was signed (key id, ``created`` and the signature's bytes),
never on how the headers happen to be spelled.

:func:`claim` reads and checks everything that costs nothing before any key is fetched: exactly
one signature, its syntax, the label in both headers, the algorithm, the covered components, the
``created`` window, a 64-byte Ed25519 signature and an http(s) key id. A draft-cavage
``Signature: keyId=...`` header gets a 401 that names the scheme this node speaks.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import http_sf
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    MappingKeyResolver,
)
from http_message_signatures.algorithms import ED25519
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from federation.identity import NodeKey
from hif.errors import AuthRequired, PreconditionFailed
from hif.store.base import ObjectStore

WINDOW = 300  # seconds either side of now that ``created`` may be
COVERED = ("@method", "@target-uri", "content-digest")
LABEL = "sig1"
REPLAY_PREFIX = "_node/replay/"


class BadSignature(AuthRequired):
    """The request is unsigned, badly signed, stale or replayed (HTTP 401)."""


class _Headers:
    """Header lines as the library reads and writes them (a list keeps repeated lines)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs = list(pairs)

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(dict.fromkeys(n for n, _ in self.pairs))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.pairs)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.pairs.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.pairs = [(n, v) for n, v in self.pairs if n.lower() != name.lower()]


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key: NodeKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str) -> ed25519.Ed25519PrivateKey:
        if key_id != self.key.key_id:
            raise KeyError(key_id)
        return self.key.private_key()

    def resolve_public_key(self, key_id: str) -> None:
        return None


def sign_headers(
    key: NodeKey,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str] | None = None,
    *,
    created: float | None = None,
) -> dict[str, str]:
    """The headers plus ``Content-Digest`` (with a body), ``Signature-Input`` and ``Signature``."""
    msg = _Message(method.upper(), url, _Headers((headers or {}).items()))
    signer = HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=_OneKey(key))
    when = datetime.datetime.fromtimestamp(
        time.time() if created is None else created, tz=datetime.UTC
    )
    signer.sign(
        msg,
        key_id=key.key_id,
        created=when,
        label=LABEL,
        covered_component_ids=("@method", "@target-uri"),
        body=body,
    )
    return dict(msg.headers.pairs)


@dataclass(frozen=True)
class Verified:
    key_id: str
    created: int


@dataclass(frozen=True)
class Claim:
    """What a request's signature headers claim, checked for form before any key is fetched."""

    key_id: str
    created: int
    signature: bytes  # the decoded signature bytes (what the replay cache is keyed on)


DRAFT_CAVAGE = (
    "this node supports RFC 9421 HTTP Message Signatures only (Signature-Input and Signature "
    "headers, alg ed25519); draft-cavage HTTP Signatures (Signature: keyId=...) are not accepted"
)


def _dictionary(headers: list[tuple[str, str]], name: str) -> dict[str, object]:
    values = [v for n, v in headers if n.lower() == name]
    try:
        parsed = http_sf.parse(", ".join(values).encode(), tltype="dictionary")
    except (ValueError, TypeError, UnicodeError):
        raise BadSignature(f"malformed {name.title()} header") from None
    if not isinstance(parsed, dict):
        raise BadSignature(f"malformed {name.title()} header")
    return parsed


def claim(headers: Iterable[tuple[str, str]], *, now: float | None = None) -> Claim:
    """The signature a request claims, checked for everything that needs no key (HTTP 401
    otherwise): run before any key fetch, so that a stranger's junk costs no outgoing request."""
    pairs = list(headers)
    names = {n.lower() for n, _ in pairs}
    if "signature-input" not in names:
        sig = " ".join(v for n, v in pairs if n.lower() == "signature")
        if "keyid=" in sig.lower().replace(" ", ""):
            raise BadSignature(DRAFT_CAVAGE)
        raise BadSignature("the request is not signed (HTTP Message Signatures, RFC 9421)")
    inputs = _dictionary(pairs, "signature-input")
    if len(inputs) != 1:
        raise BadSignature("exactly one signature is expected")
    ((label, member),) = inputs.items()
    members, params = member if isinstance(member, tuple) else (None, None)
    if not isinstance(members, list) or not isinstance(params, dict):
        raise BadSignature("malformed Signature-Input header")
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise BadSignature("the signature names no keyid")
    if not key_id.startswith(("https://", "http://")):
        raise BadSignature("the signature's keyid is not an http(s) URL")
    alg = params.get("alg", "ed25519")
    if alg != "ed25519":
        raise BadSignature(f"the signature algorithm {alg!r} is not supported (only ed25519)")
    covered = {m[0] for m in members if isinstance(m, tuple)}
    missing = [c for c in COVERED if c not in covered]
    if missing:
        raise BadSignature(f"the signature does not cover {', '.join(missing)}")
    created = params.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise BadSignature("the signature has no created time")
    t = time.time() if now is None else now
    if abs(t - created) > WINDOW:
        raise BadSignature("the signature was created outside the allowed ±5 minutes")
    signatures = _dictionary(pairs, "signature")
    if set(signatures) != {label}:
        raise BadSignature(f"the Signature header must carry exactly the signature {label!r}")
    value = signatures[label]
    sig = value[0] if isinstance(value, tuple) else None
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise BadSignature("the signature is not 64 bytes of Ed25519")
    return Claim(key_id, created, sig)


def signature_key_id(headers: Iterable[tuple[str, str]]) -> str:
    """The ``keyid`` a request claims, read before anything is fetched or verified."""
    return claim(headers).key_id


def verify_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    key_id: str,
    public: bytes,
    *,
    now: float | None = None,
) -> Verified:
    """Check the signature with ``public`` (the key of ``key_id``): components, digest, window."""
    msg = _Message(method.upper(), url, _Headers(headers))
    pub = ed25519.Ed25519PublicKey.from_public_bytes(public)
    verifier = HTTPMessageVerifier(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(public_keys={key_id: pub}, private_keys={}),
    )
    verifier.max_clock_skew = datetime.timedelta(seconds=WINDOW)
    try:
        results = verifier.verify(
            msg, max_age=datetime.timedelta(0), require_components=COVERED, body=body
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as e:
        raise BadSignature(f"the request signature does not verify: {e}") from None
    created = results[0].parameters.get("created")
    if not isinstance(created, int):
        raise BadSignature("the signature has no created time")
    t = time.time() if now is None else now
    if abs(t - created) > WINDOW:  # the library checks this too; the window is ours to state
        raise BadSignature("the signature was created outside the allowed ±5 minutes")
    return Verified(key_id, created)


def replay_id(c: Claim) -> str:
    """The replay cache's name for a signature: a hash of the key id, ``created`` and the decoded
    signature bytes. Re-spelling the headers (parameters, labels, whitespace, line splits) does
    not change it; Ed25519 signatures are deterministic, so one signed message has one name."""
    h = hashlib.sha256()
    for part in (c.key_id.encode(), str(c.created).encode(), c.signature):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


async def remember(store: ObjectStore, c: Claim) -> None:
    """Accept a signature once: put-if-absent of its :func:`replay_id`, bucketed by hour for lazy
    expiry."""
    try:
        await store.put(
            f"{REPLAY_PREFIX}{c.created // 3600}/{replay_id(c)}", b"", if_none_match=True
        )
    except PreconditionFailed:
        raise BadSignature("this signature was already used (replayed request)") from None


async def expire_replays(store: ObjectStore, now: float | None = None) -> int:
    """Drop replay entries no request can match any more (created more than the window ago)."""
    oldest = int(((time.time() if now is None else now) - 2 * WINDOW) // 3600)
    dropped = 0
    for bucket in await store.list_children(REPLAY_PREFIX):
        if bucket.isdigit() and int(bucket) < oldest:
            async for key in store.iter_keys(f"{REPLAY_PREFIX}{bucket}/"):
                await store.delete(key)
                dropped += 1
    return dropped


KeyLookup = Callable[[str], Awaitable[bytes]]
