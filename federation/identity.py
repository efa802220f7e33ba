"""The node's Ed25519 identity: one key per node, shared by its replicas, stable across restarts.

The seed comes from ``MICELIO_NODE_KEY`` (base64 of 32 bytes) when the operator manages keys, or
else from the store key ``_node/identity``, created exactly once with put-if-absent (two replicas
starting together agree on whichever write won). A damaged stored key stops the node instead of
being silently replaced: peers know the node by that key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import time
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hif.errors import CorruptObject, InvalidInput, PreconditionFailed
from hif.objects import decode, encode
from hif.store.base import ObjectStore

IDENTITY_KEY = "_node/identity"


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key and how peers name it (``<node>/ap/node#main-key``)."""

    seed: bytes
    url: str  # the node's public URL, no trailing slash

    @property
    def signing(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public(self) -> bytes:
        return bytes(self.signing.verify_key)

    @property
    def actor(self) -> str:
        return f"{self.url}/ap/node"

    @property
    def key_id(self) -> str:
        return f"{self.actor}#main-key"

    def sign(self, data: bytes) -> bytes:
        return self.signing.sign(data).signature

    def private_key(self) -> ed25519.Ed25519PrivateKey:
        """The same key for ``http-message-signatures`` (which uses ``cryptography``)."""
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.seed)

    def public_pem(self) -> str:
        return public_pem(self.public)


def public_pem(raw: bytes) -> str:
    key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_from_pem(pem: str) -> bytes:
    """Raw 32 bytes of an Ed25519 public key in PEM (SubjectPublicKeyInfo); nothing else."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise InvalidInput("the actor's publicKeyPem is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInput("the actor's key is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify(public: bytes, data: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
        return False
    return True


def parse_seed(text: str) -> bytes:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("MICELIO_NODE_KEY must be base64 of a 32-byte Ed25519 seed") from None
    if len(seed) != 32:
        raise InvalidInput("MICELIO_NODE_KEY must be base64 of a 32-byte Ed25519 seed")
    return seed


async def load_node_key(store: ObjectStore, url: str, configured: str | None = None) -> NodeKey:
    """The node's key: the configured seed, else the stored one, else a new one stored once."""
    if configured:
        return NodeKey(parse_seed(configured), url.rstrip("/"))
    data = await store.get_or_none(IDENTITY_KEY)
    if data is None:
        fresh = encode({"v": 1, "seed": os.urandom(32), "created": time.time()})
        with contextlib.suppress(PreconditionFailed):  # another replica won: use its key
            await store.put(IDENTITY_KEY, fresh, if_none_match=True)
        data = await store.get(IDENTITY_KEY)
    try:
        value = decode(data)
        seed = value["seed"]
    except (CorruptObject, KeyError, TypeError):
        seed = None
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise CorruptObject(
            f"the node key at {IDENTITY_KEY} is damaged; restore it from a backup "
            "(peers know this node by it) or set MICELIO_NODE_KEY"
        )
    return NodeKey(seed, url.rstrip("/"))
