"""The S3 store: the same ObjectStore contract on any S3 API (AWS, MinIO, moto...).

Conditional writes map one to one onto S3's ``If-None-Match: *`` and ``If-Match: <etag>``, so the
object store itself arbitrates races between landers; nothing here holds a lock. Etags are passed
through exactly as S3 returns them (quotes included) so they round-trip into ``if_match``.

Transient failures (5xx, throttling, dropped connections, timeouts) are retried here with jittered
exponential backoff, and botocore's own retries are switched off so there is exactly one retry policy
and ``requests`` counts every real round trip. Lost conditions (412, 409) are never retried: they are
answers, not failures.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from hif.errors import InvalidInput, NotFound, PreconditionFailed, StoreError
from hif.store.base import ObjectInfo, ObjectStore, check_key

T = TypeVar("T")

ATTEMPTS = 6
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
POOL_SIZE = 256
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
PAGE_MAX = 1000  # S3 never returns more than this many keys per ListObjectsV2 call

_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
_LOST_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def _error_of(e: ClientError) -> tuple[str, int]:
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@dataclass(slots=True)
class _CallState:
    """Whether an earlier attempt of a call may have reached S3 and taken effect before failing."""

    uncertain: bool = False


class S3Store(ObjectStore):
    """ObjectStore on an S3 bucket, optionally under a key prefix (``s3://bucket/prefix``)."""

    hedge_reads = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        create: bool = False,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        if not bucket:
            raise InvalidInput("S3 store URL needs a bucket: s3://BUCKET[/PREFIX]")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self._pfx = prefix + "/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.create = create
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self.requests = 0
        self._session = get_session()
        self._config = AioConfig(
            region_name=region,
            max_pool_connections=POOL_SIZE,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            # only checksum when S3 demands it: several S3-compatible servers reject the newer headers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client_cm: Any = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        create: bool = False,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> S3Store:
        """Open ``s3://BUCKET[/PREFIX]``; settings not given come from the standard AWS variables."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InvalidInput(f"not an S3 store URL: {url} (use s3://BUCKET[/PREFIX])")
        env = os.environ
        return cls(
            parts.netloc,
            parts.path,
            create=create,
            endpoint_url=endpoint_url
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or None,
            region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key=access_key or env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=secret_key or env.get("AWS_SECRET_ACCESS_KEY") or None,
        )

    # -- connection --------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"

    async def _get_client(self) -> Any:
        """Create the client inside the running loop (aiohttp sessions are bound to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # a new event loop (e.g. a second asyncio.run): the old client cannot be used from here
            self._loop, self._lock, self._client, self._client_cm = loop, asyncio.Lock(), None, None
        if self._client is not None:
            return self._client
        assert self._lock is not None
        async with self._lock:
            if self._client is None:
                cm = self._session.create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    config=self._config,
                )
                client = await cm.__aenter__()
                try:
                    await self._check_bucket(client)
                except BaseException:
                    await cm.__aexit__(None, None, None)
                    raise
                self._client_cm, self._client = cm, client
        return self._client

    async def _check_bucket(self, client: Any) -> None:
        """Fail early and clearly on a missing bucket or bad credentials (HEAD on a key cannot tell)."""
        if self.create:
            params: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await self._attempts(
                    f"create bucket {self.bucket}", client, lambda c: c.create_bucket(**params)
                )
            except ClientError as e:
                code, _ = _error_of(e)
                if code == "BucketAlreadyOwnedByYou":
                    return
                if code == "BucketAlreadyExists":
                    raise StoreError(
                        f"bucket {self.bucket} exists and belongs to another account"
                    ) from None
                raise self._store_error(e, f"create bucket {self.bucket}") from None
            return
        try:
            await self._attempts(
                f"head bucket {self.bucket}", client, lambda c: c.head_bucket(Bucket=self.bucket)
            )
        except ClientError as e:
            code, status = _error_of(e)
            if status == 404 or code in ("NoSuchBucket", "NotFound", "404"):
                raise StoreError(f"bucket {self.bucket} does not exist at {self._where}") from None
            raise self._store_error(e, f"open bucket {self.bucket}") from None

    async def close(self) -> None:
        """Close the connection pool; the store reconnects lazily if used again."""
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None and self._loop is asyncio.get_running_loop():
            await cm.__aexit__(None, None, None)

    # -- request plumbing --------------------------------------------------------------------

    async def _attempts(
        self,
        what: str,
        client: Any,
        fn: Callable[[Any], Awaitable[T]],
        state: _CallState | None = None,
    ) -> T:
        """Run one S3 round trip, retrying only what is transient; other ClientErrors propagate."""
        last = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
            self.requests += 1
            try:
                return await fn(client)
            except ClientError as e:
                code, status = _error_of(e)
                if status < 500 and code not in _RETRY_CODES:
                    raise
                last = f"{code or status}: {e.response.get('Error', {}).get('Message', '')}".strip()
                if state is not None:
                    state.uncertain = True
            except (EndpointConnectionError, ConnectTimeoutError) as e:
                last = _one_line(e)  # never reached the server: nothing can have taken effect
            except NoCredentialsError:
                raise StoreError(
                    f"no S3 credentials for {self._where} "
                    "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                ) from None
            except (TimeoutError, BotoConnectionError, HTTPClientError) as e:
                last = _one_line(e)
                if state is not None:
                    state.uncertain = True
            except BotoCoreError as e:
                raise StoreError(f"S3 {what} failed at {self._where}: {_one_line(e)}") from None
        raise StoreError(f"S3 {what} failed at {self._where} after {ATTEMPTS} attempts: {last}")

    async def _call(
        self, what: str, fn: Callable[[Any], Awaitable[T]], state: _CallState | None = None
    ) -> T:
        return await self._attempts(what, await self._get_client(), fn, state)

    def _store_error(self, e: ClientError, what: str) -> StoreError:
        code, status = _error_of(e)
        message = " ".join(str(e.response.get("Error", {}).get("Message", "")).split())
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket} does not exist at {self._where}")
        if code in _AUTH_CODES or status == 403:
            return StoreError(
                f"S3 refused {what} at {self._where}: {code or status} {message} "
                "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy)"
            )
        return StoreError(f"S3 {what} failed at {self._where}: {code or status} {message}".rstrip())

    def _full(self, key: str) -> str:
        return self._pfx + check_key(key)

    # -- interface ---------------------------------------------------------------------------

    async def _get(self, key: str) -> tuple[bytes, str]:
        full = self._full(key)

        async def fetch(client: Any) -> tuple[bytes, str]:
            # the body is read inside the attempt so a connection dropped mid-body is retried too
            resp = await client.get_object(Bucket=self.bucket, Key=full)
            async with resp["Body"] as body:
                data = await body.read()
            return data, resp["ETag"]

        try:
            return await self._call(f"get {key}", fetch)
        except ClientError as e:
            code, status = _error_of(e)
            if code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                raise NotFound(f"no such key: {key}") from None
            raise self._store_error(e, f"get {key}") from None

    async def get(self, key: str) -> bytes:
        return (await self._get(key))[0]

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return await self._get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            resp = await self._call(
                f"head {key}", lambda c: c.head_object(Bucket=self.bucket, Key=full)
            )
        except ClientError as e:
            code, status = _error_of(e)
            if status == 404 or code in _MISSING_CODES:
                return None
            raise self._store_error(e, f"head {key}") from None
        return ObjectInfo(key, resp["ETag"], int(resp["ContentLength"]))

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        full = self._full(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": data}
        if if_none_match:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        conditional = if_none_match or if_match is not None
        state = _CallState()
        try:
            resp = await self._call(f"put {key}", lambda c: c.put_object(**params), state)
        except ClientError as e:
            code, status = _error_of(e)
            lost = conditional and (
                status in (409, 412)
                or code in _LOST_CODES
                or (if_match is not None and (code == "NoSuchKey" or status == 404))
            )
            if not lost:
                raise self._store_error(e, f"put {key}") from None
            if state.uncertain:
                # an earlier attempt may have succeeded and this 412 is our own write looking back
                etag = await self._already_written(key, data)
                if etag is not None:
                    return etag
            reason = "exists" if if_none_match else "changed or absent"
            raise PreconditionFailed(f"key {reason}: {key}") from None
        return resp["ETag"]

    async def _already_written(self, key: str, data: bytes) -> str | None:
        """After an ambiguous retry, the etag if the key now holds exactly our bytes."""
        try:
            current, etag = await self._get(key)
        except NotFound:
            return None
        return etag if current == data else None

    async def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            await self._call(
                f"delete {key}", lambda c: c.delete_object(Bucket=self.bucket, Key=full)
            )
        except ClientError as e:
            code, status = _error_of(e)
            if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                return
            raise self._store_error(e, f"delete {key}") from None

    async def _list(self, what: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._call(what, lambda c: c.list_objects_v2(**params))
        except ClientError as e:
            raise self._store_error(e, what) from None

    async def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[str]:
        out: list[str] = []
        after = self._pfx + start_after if start_after is not None else None
        n = len(self._pfx)
        while len(out) < limit:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self._pfx + prefix,
                "MaxKeys": min(PAGE_MAX, limit - len(out)),
            }
            if after is not None:
                params["StartAfter"] = after
            resp = await self._list(f"list {prefix!r}", params)
            keys = [obj["Key"] for obj in resp.get("Contents", [])]
            out.extend(k[n:] for k in keys)
            if not keys or not resp.get("IsTruncated"):
                break
            after = keys[-1]
        return out[:limit]

    async def list_children(self, prefix: str) -> list[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError("list_children needs a prefix ending in '/'")
        full = self._pfx + prefix
        n = len(full)
        names: set[str] = set()
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": full,
                "Delimiter": "/",
                "MaxKeys": PAGE_MAX,
            }
            if token:
                params["ContinuationToken"] = token
            resp = await self._list(f"list children of {prefix!r}", params)
            names.update(obj["Key"][n:] for obj in resp.get("Contents", []))
            names.update(p["Prefix"][n:].rstrip("/") for p in resp.get("CommonPrefixes", []))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                break
        names.discard("")
        return sorted(names)
