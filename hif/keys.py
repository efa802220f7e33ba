"""The user's (or agent's) Ed25519 signing key, which signs check attestations (``hif check``).

The seed lives in ``$HIF_CONFIG_DIR/key`` (hex, mode 0600), created on first use by ``hif init``,
``hif login`` or ``hif check``. A forge trusts a key once ``hif login`` registered it on the account
(``PUT /api/v1/keys``); a local store trusts the keys listed under ``keys/<user>`` (written by
``hif init`` and ``hif check``). pynacl is imported lazily: most commands never sign anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hif.errors import InvalidInput, NotFound, PreconditionFailed
from hif.objects import decode, encode
from hif.store.base import ObjectStore

KEY_FILE = "key"


def config_dir() -> Path:
    """``$HIF_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/hif``, else ``~/.config/hif``: where hif keeps
    the user's signing key and forge credentials (here, not in hif.forge: httpx is slow to import)."""
    explicit = os.environ.get("HIF_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "hif"


def key_path() -> Path:
    return config_dir() / KEY_FILE


def signing_key() -> Any:
    """The user's ``nacl.signing.SigningKey``, created (0600 from the start) if missing."""
    import nacl.signing

    path = key_path()
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        seed = b""
    except (OSError, ValueError) as e:
        raise InvalidInput(f"cannot read the signing key {path}: {e}") from None
    if seed:
        if len(seed) != 32:
            raise InvalidInput(f"the signing key {path} is damaged (expected 32 bytes of hex)")
        return nacl.signing.SigningKey(seed)
    key = nacl.signing.SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (bytes(key).hex() + "\n").encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replace a key another process created a moment ago
    except FileExistsError:
        os.unlink(tmp)
        return signing_key()
    os.unlink(tmp)
    return key


def public_key() -> bytes:
    return bytes(signing_key().verify_key)


def sign(body: dict[str, Any]) -> bytes:
    """Ed25519 signature of the canonical CBOR of ``body``."""
    return bytes(signing_key().sign(encode(body)).signature)


def verify(body: Any, signature: Any, key: Any) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``body``; False for anything malformed."""
    import nacl.exceptions
    import nacl.signing

    if not (isinstance(signature, bytes) and isinstance(key, bytes) and len(key) == 32):
        return False
    try:
        nacl.signing.VerifyKey(key).verify(encode(body), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


# -- trust in a local store ----------------------------------------------------------------------


def _trust_key(user: str) -> str:
    if not user or "/" in user:
        raise InvalidInput(f"not a user name: {user!r}")
    return f"keys/{user}"


async def trusted_keys(store: ObjectStore, user: str) -> list[bytes]:
    data = await store.get_or_none(_trust_key(user))
    if data is None:
        return []
    keys = decode(data)
    return [k for k in keys if isinstance(k, bytes)] if isinstance(keys, list) else []


async def trust(store: ObjectStore, user: str, key: bytes) -> None:
    """Add ``key`` to ``keys/<user>`` in a local store (compare-and-swap, so no key is lost)."""
    for _ in range(100):
        try:
            data, etag = await store.get_with_etag(_trust_key(user))
        except NotFound:  # the first key of this user
            data, etag = None, None
        keys = decode(data) if data is not None else []
        if key in keys:
            return
        try:
            if etag is None:
                await store.put(_trust_key(user), encode([*keys, key]), if_none_match=True)
            else:
                await store.put(_trust_key(user), encode([*keys, key]), if_match=etag)
            return
        except PreconditionFailed:
            continue
    raise InvalidInput(f"could not record the key of {user}: too much contention")
