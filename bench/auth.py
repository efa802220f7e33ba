"""Auth at scale: what creating an agent token, logging in and checking a token cost with few and
with many users and tokens, and how many token creations per second 4 replicas sustain on the S3
latency model.

Both parts run the auth database as it is now (``node/authdb.py``: a log of row changes, each
replica with a local SQLite copy) and, for the before figures, as it was (the whole SQLite file
uploaded by compare-and-swap per write: ``node/authdb.py`` from ``--before REV``, default
:data:`BEFORE`, the last revision with it), one after the other in one run, interleaved per size.

- **scale**: a store whose auth database holds N users with one token each (N = ``--sizes``), read
  as a checkpoint by a fresh replica; then ``--ops`` of each operation on that replica: an agent
  token bound to a session (``create_token(..., repo=, session=, by=)``), a log-in (password check
  and a log-in token; argon2 at its minimum cost so the database's share shows), and a token
  check (``authenticate``). Per operation: CPU (``resource.getrusage``), store calls and bytes
  written, on the embedded store without fsync (so the figures are the code's, not the disk's).
- **replicas**: R replicas (``--replicas``, default 4; separate ``AuthDB`` and latency wrappers
  over one store, in one process) with C clients each (``--clients``) creating agent tokens until
  ``--tokens`` are made; the store is the embedded one on tmpfs behind
  ``FaultyStore(Faults(latency=s3_latency))`` (~60 ms a call, 1% tail of 300-800 ms).

Run: ``.venv/bin/python bench/auth.py`` (``--sizes 100,100000 --ops 200 --clients 32 --tokens 3000``);
``--impls now`` skips the before figures. Target: each operation costs the same at both sizes;
>= 200 token creations/s across 4 replicas on the latency model.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import ROOT, machine, ratio, secs, table  # noqa: E402

sys.path.insert(0, str(ROOT))
import nacl.pwhash.argon2id as argon2id  # noqa: E402
import sqlite_utils  # noqa: E402
import zstandard  # noqa: E402

import node.authdb as authdb_now  # noqa: E402
from hif.store.base import ObjectInfo, ObjectStore  # noqa: E402
from hif.store.embedded import EmbeddedStore  # noqa: E402
from hif.testing.faults import Faults, FaultyStore, s3_latency  # noqa: E402
from node.accounts import Accounts, hash_token  # noqa: E402

FAST = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}
REPO = "bench/r"
PASSWORD = "bench-password"
# the last revision whose auth database was one SQLite file re-uploaded per write
BEFORE = "ae4ce30ddc3060e510d5534472474776e2bb6a70"


class Counting(ObjectStore):
    """Counts calls and bytes written (what one operation costs in store traffic)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.hedge_reads = inner.hedge_reads
        self.calls = 0
        self.put_bytes = 0

    async def get(self, key: str) -> bytes:
        self.calls += 1
        return await self.inner.get(key)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self.calls += 1
        return await self.inner.get_with_etag(key)

    async def head(self, key: str) -> ObjectInfo | None:
        self.calls += 1
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        self.calls += 1
        self.put_bytes += len(data)
        return await self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)

    async def delete(self, key: str) -> None:
        self.calls += 1
        await self.inner.delete(key)

    async def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        self.calls += 1
        return await self.inner.list_page(prefix, start_after=start_after, limit=limit)

    async def list_children(self, prefix: str) -> list[str]:
        self.calls += 1
        return await self.inner.list_children(prefix)

    async def get_many(self, keys: Any) -> list[bytes | None]:
        self.calls += len(keys)
        return await self.inner.get_many(keys)


def load_before(rev: str, work: Path) -> ModuleType:
    """``node/authdb.py`` as of ``rev``, imported under another name (its imports are hif's)."""
    src = subprocess.run(["git", "show", f"{rev}:node/authdb.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    path = work / "authdb_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("authdb_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def secret_of(i: int) -> str:
    return "mcl_" + hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:32]


def fixture_image(n: int) -> bytes:
    """An auth database of ``n`` users with one token each, plus the bench user and its repository."""
    pw_hash = argon2id.str(PASSWORD.encode(), **FAST).decode()
    conn = sqlite3.connect(":memory:")
    db = sqlite_utils.Database(conn, execute_plugins=False)
    authdb_now.create_schema(db)
    now = time.time()
    with db.atomic():
        db["users"].insert_all(({"name": f"user{i}", "password_hash": pw_hash, "admin": 0, "created": now,
                                 "disabled": 0} for i in range(n)), batch_size=5000)
        db["users"].insert({"name": "bench", "password_hash": pw_hash, "admin": 0, "created": now, "disabled": 0})
        db["tokens"].insert_all(({"id": f"t{i:08d}", "user": f"user{i}", "hash": hash_token(secret_of(i)),
                                  "name": "", "scope": "write", "repo": None, "session": None, "created": now,
                                  "expires": None, "revoked": None, "login": 0} for i in range(n)),
                                batch_size=5000)
        db["tokens"].insert({"id": "tbench", "user": "bench", "hash": hash_token(secret_of(-1)), "name": "",
                             "scope": "write", "repo": None, "session": None, "created": now, "expires": None,
                             "revoked": None, "login": 0})
        db["repos"].insert({"name": REPO, "private": 0, "description": "", "owner": "bench", "created": now})
    conn.execute("update auth_meta set position = 0")
    image = conn.serialize()
    conn.close()
    return image


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def scale_one(mod: ModuleType, image: bytes, n: int, ops: int, work: Path) -> dict[str, Any]:
    """Per-operation CPU, store calls and bytes written on a replica over an ``n``-user database."""
    root = Path(tempfile.mkdtemp(dir=work))
    raw = EmbeddedStore(root / "store", create=True, fsync=False)
    await raw.put(authdb_now.KEY, zstandard.ZstdCompressor(level=3).compress(image))
    store = Counting(raw)
    db = mod.AuthDB(store, root / "cache")
    acc = Accounts(db, **FAST)
    t0 = cpu()
    await db.read()
    load = cpu() - t0
    bench = await acc.authenticate(secret_of(-1))
    assert bench is not None
    out: dict[str, Any] = {"n": n, "load_cpu": load, "image": len(image)}
    rng = random.Random(n)

    async def agent(i: int) -> None:
        await acc.create_token("bench", scope="write", repo=REPO, session=f"s{i}", expires_in=3600.0, by=bench)

    async def login(i: int) -> None:
        assert await acc.check_password("bench", PASSWORD)
        await acc.create_token("bench", scope="write", name="login", expires_in=86400.0, login=True)

    async def check(i: int) -> None:
        assert await acc.authenticate(secret_of(rng.randrange(n))) is not None

    for name, op in (("agent token", agent), ("log-in", login), ("token check", check)):
        calls0, bytes0, c0, w0 = store.calls, store.put_bytes, cpu(), time.perf_counter()
        for i in range(ops):
            await op(i)
        out[name] = {"cpu": (cpu() - c0) / ops, "wall": (time.perf_counter() - w0) / ops,
                     "calls": (store.calls - calls0) / ops, "bytes": (store.put_bytes - bytes0) / ops}
    db.close()
    await raw.close()
    shutil.rmtree(root, ignore_errors=True)
    return out


async def replicas_run(mod: ModuleType, image: bytes, replicas: int, clients: int, tokens: int,
                       model_dir: Path) -> dict[str, Any]:
    """``replicas`` replicas x ``clients`` clients creating agent tokens on the latency model."""
    root = Path(tempfile.mkdtemp(dir=model_dir))
    raw = EmbeddedStore(root / "store", create=True, fsync=False)
    await raw.put(authdb_now.KEY, zstandard.ZstdCompressor(level=3).compress(image))
    counting = Counting(raw)
    accs = []
    for r in range(replicas):
        store = FaultyStore(counting, Faults(latency=s3_latency), rng=random.Random(f"replica-{r}"))
        acc = Accounts(mod.AuthDB(store, root / f"cache-{r}"), **FAST)
        accs.append(acc)
    bench = await accs[0].authenticate(secret_of(-1))
    assert bench is not None
    for acc in accs:
        await acc.db.read()
    left = [tokens]
    lat: list[float] = []
    per: dict[str, int] = {}
    errors: list[str] = []
    puts0 = counting.calls

    async def client(acc: Accounts, tag: str) -> None:
        i = 0
        while left[0] > 0:
            left[0] -= 1
            i += 1
            t = time.perf_counter()
            try:
                await acc.create_token("bench", scope="write", repo=REPO, session=f"{tag}-{i}", expires_in=3600.0,
                                       by=bench)
            except Exception as e:  # counted and shown: a failed creation is a result too
                errors.append(f"{type(e).__name__}: {e}")
                continue
            lat.append(time.perf_counter() - t)
            per[tag.split("c")[0]] = per.get(tag.split("c")[0], 0) + 1

    c0, w0 = cpu(), time.perf_counter()
    await asyncio.gather(*(client(acc, f"r{r}c{c}") for r, acc in enumerate(accs) for c in range(clients)))
    wall = time.perf_counter() - w0
    used = cpu() - c0
    calls = counting.calls - puts0
    # every replica, caught up, holds every token made
    counts = set()
    for acc in accs:
        await acc.db.refresh()
        counts.add((await acc.db.read()).execute("select count(*) from tokens where session is not null").fetchone()[0])
        acc.db.close()
    await raw.close()
    shutil.rmtree(root, ignore_errors=True)
    lat.sort()
    return {"per": [per.get(f"r{r}", 0) for r in range(replicas)], "made": len(lat), "wall": wall, "cpu": used, "calls": calls, "errors": errors, "counts": counts,
            "p50": lat[len(lat) // 2] if lat else 0.0, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,100000", help="users (and tokens) in the database")
    ap.add_argument("--ops", type=int, default=200, help="operations of each kind per size (now)")
    ap.add_argument("--ops-before", type=int, default=20, help="operations of each kind per size (before)")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--clients", type=int, default=32, help="clients per replica")
    ap.add_argument("--tokens", type=int, default=3000, help="token creations in all (now)")
    ap.add_argument("--tokens-before", type=int, default=200, help="token creations in all (before)")
    ap.add_argument("--impls", default="now,before", help="now,before")
    ap.add_argument("--before", default=BEFORE, help="the revision whose node/authdb.py is 'before'")
    ap.add_argument("--parts", default="scale,replicas")
    ap.add_argument("--model-dir", type=Path, default=Path("/dev/shm"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    impls = args.impls.split(",")
    parts = args.parts.split(",")
    print(f"auth: sizes {sizes}, {args.replicas} replicas x {args.clients} clients; {machine()}")
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        work = Path(tmp)
        mods = {"now": authdb_now}
        if "before" in impls:
            mods["before"] = load_before(args.before, work)
        images = {n: fixture_image(n) for n in sizes}
        if "scale" in parts:
            rows = []
            results: dict[tuple[str, int], dict[str, Any]] = {}
            for n in sizes:  # interleaved: now and before at each size
                for impl in impls:
                    ops = args.ops if impl == "now" else args.ops_before
                    r = asyncio.run(scale_one(mods[impl], images[n], n, ops, work))
                    results[(impl, n)] = r
                    for op in ("agent token", "log-in", "token check"):
                        f = r[op]
                        rows.append([impl, f"{n:,}", op, f"{f['cpu'] * 1e6:,.0f} µs", secs(f["wall"]),
                                     f"{f['calls']:.1f}", f"{f['bytes']:,.0f}"])
                    rows.append([impl, f"{n:,}", "(replica start)", secs(r["load_cpu"]), "", "",
                                 f"image {r['image'] / 1e6:.1f} MB"])
            print(table(["impl", "users+tokens", "operation", "CPU/op", "wall/op", "store calls/op",
                         "bytes written/op"], rows))
            if len(sizes) > 1:
                small, big = sizes[0], sizes[-1]
                for impl in impls:
                    for op in ("agent token", "log-in", "token check"):
                        a, b = results[(impl, small)][op], results[(impl, big)][op]
                        print(f"{impl}: {op} at {big:,} / at {small:,}: CPU {ratio(b['cpu'], a['cpu'])}, "
                              f"bytes written {ratio(b['bytes'], a['bytes']) if a['bytes'] else 'n/a'}")
        if "replicas" in parts:
            rows = []
            for impl in impls:
                tokens = args.tokens if impl == "now" else args.tokens_before
                r = asyncio.run(replicas_run(mods[impl], images[sizes[0]], args.replicas, args.clients, tokens,
                                             args.model_dir))
                rows.append([impl, r["made"], secs(r["wall"]), f"{r['made'] / r['wall']:.1f}", secs(r["p50"]),
                             secs(r["p99"]), f"{r['calls'] / max(1, r['made']):.2f}", f"{r['cpu']:.1f} s",
                             len(r["errors"]), ",".join(map(str, sorted(r["counts"]))),
                             " / ".join(map(str, r["per"]))])
                for e in sorted(set(r["errors"]))[:3]:
                    print(f"  {impl} error: {e}")
            print(table(["impl", "tokens made", "wall", "creations/s", "p50", "p99", "store calls/token", "CPU",
                         "errors", "tokens seen by each replica", "made per replica"], rows))
            print("target: >= 200 creations/s across 4 replicas on the 60 ms latency model")
    print(f"peak RSS of the bench process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
