"""Large trees: landing, diffing and sparse cloning at 1,000 and at 1,000,000 files.

For each size F a repository of F files is built (F/100 directories ``dNNNN/`` of 100 files),
imported as chunked records straight through the plumbing, as an importer does; blob contents cycle
through 1,000 distinct texts so that building is bounded by tree work, not by writing F blob files.
Then, measured:

- hif: landing a 3-file session with ``land()`` — store calls by kind and time. The claim under test:
  the same order of object writes at 1,000 and at 1,000,000 files (trees are rewritten only along
  the changed paths).
- hif: the tree diff around that landing — objects read.
- hif through a node (``micelio serve``): ``hif clone --sparse dNNNN`` — objects fetched, time, the
  client's and the node's peak memory (target: the node under 512 MB at 1,000,000 files).
- git, the same layout built with ``git fast-import``: one commit of 3 changed files the way git must
  do it, through an index of all F entries (``read-tree``, ``update-index``, ``write-tree``,
  ``commit-tree``) — time and peak memory.

Run: ``.venv/bin/python bench/scale.py [--sizes 1000,1000000]`` (a smoke run: ``--sizes 1000,20000``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    HIF,
    Spawner,
    git_env,
    hif_env,
    machine,
    mib,
    parse_ints,
    ratio,
    secs,
    serve_node,
    table,
    vm_hwm_kib,
    workdir,
)

SPAWN = Spawner()  # started before the benchmark grows, so commands report their own peak memory
run = SPAWN.run

from hif.mainline import LandedSession, LandingRecord  # noqa: E402
from hif.objects import FILE, Entry  # noqa: E402
from hif.repo import Repo  # noqa: E402
from hif.session import make_event  # noqa: E402
from hif.store.embedded import EmbeddedStore  # noqa: E402
from hif.testing.faults import Faults, FaultyStore  # noqa: E402
from hif.tree import apply  # noqa: E402
from hif.tree import diff as tree_diff  # noqa: E402

NAME = "bench/scale"
PER_DIR = 100
CHUNK = 20_000
DISTINCT = 1_000
NODE_TARGET_MIB = 512


def path_of(i: int) -> str:
    return f"d{i // PER_DIR:05d}/f{i % PER_DIR:03d}.txt"


def text_of(i: int) -> bytes:
    return f"file content number {i % DISTINCT}\n".encode()


async def build(store_dir: Path, files: int) -> float:
    """Import ``files`` files as records of CHUNK files each; returns the seconds it took."""
    t0 = time.perf_counter()
    store = EmbeddedStore(store_dir, create=True, fsync=False)
    repo = Repo(store, NAME)
    await repo.create(description=f"{files} files")
    blobs = [await repo.objects.put_blob(text_of(i)) for i in range(min(files, DISTINCT))]
    tree = await repo.mainline.tree_at(0)
    for pos, start in enumerate(range(0, files, CHUNK), start=1):
        changes: dict[str, Entry | None] = {
            path_of(i): Entry(FILE, blobs[i % DISTINCT]) for i in range(start, min(files, start + CHUNK))
        }
        s = await repo.sessions.start(f"import files {start}..", "bench", "agent", pos - 1)
        snap = await repo.sessions.write_snapshot(s, changes)
        new_tree = await apply(repo.objects, tree, changes)
        landed = LandedSession(s.id, snap, s.goal, s.author, s.role, s.base, changes)
        await repo.mainline.append(LandingRecord(pos, new_tree, tree, time.time(), [landed]))
        await repo.rollups.extend(pos)
        await repo.mainline.advance_hint(pos)
        await repo.sessions.close(s.id, {"state": "landed", "position": pos, "snapshot": snap})
        tree = new_tree
    await store.close()
    return time.perf_counter() - t0


def _build_main(store_dir: str, files: int, out: object) -> None:
    out.put(asyncio.run(build(Path(store_dir), files)))  # type: ignore[attr-defined]


def build_elsewhere(store_dir: Path, files: int) -> float:
    """Build in a child process: the trees it holds would otherwise stay in this one's memory."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_build_main, args=(str(store_dir), files, q))
    p.start()
    took = q.get(timeout=3600)
    p.join(timeout=60)
    return float(took)


async def land_three(store_dir: Path, files: int) -> dict[str, object]:
    """Land a session changing 3 files in 3 directories on a fresh handle; count its store calls."""
    counted = FaultyStore(EmbeddedStore(store_dir, fsync=True), Faults(0, 0, None, None), rng=Random(0))
    repo = Repo(counted, NAME)
    head = await repo.mainline.head()
    s = await repo.sessions.start("change three files", "bench", "agent", head)
    rng = Random(files)
    for k in range(3):
        i = rng.randrange(files)
        oid = await repo.objects.put_blob(f"changed {k}\n".encode())
        ev = make_event("write", "bench", "agent", time.time(), path=path_of(i), kind=FILE, blob=oid)
        await repo.sessions.append(s.id, ev)
    s = await repo.sessions.load(s.id)
    from hif.landing import land

    counted.calls.clear()
    t0 = time.perf_counter()
    result = await land(repo, s, group=1)
    took = time.perf_counter() - t0
    calls = dict(counted.calls)
    # the diff around it, on a handle with cold caches
    fresh = Repo(FaultyStore(EmbeddedStore(store_dir), Faults(0, 0, None, None), rng=Random(1)), NAME)
    before = await fresh.mainline.tree_at(result.position - 1)
    fresh.store.calls.clear()  # type: ignore[attr-defined]
    changed = [p async for p, _a, _b in tree_diff(fresh.objects, before, result.tree)]
    diff_reads = sum(fresh.store.calls.values())  # type: ignore[attr-defined]
    await counted.close()
    return {"seconds": took, "puts": calls.get("put", 0), "calls": sum(calls.values()),
            "position": result.position, "diff_paths": len(changed), "diff_reads": diff_reads}


def sparse_clone(base: Path, store_dir: Path, files: int) -> dict[str, object]:
    """Serve the store with ``micelio serve`` and clone one directory of it sparsely."""
    from hif.store import open_store
    from node.accounts import Accounts
    from node.authdb import AuthDB

    async def register() -> None:
        store = open_store(str(store_dir))
        accounts = Accounts(AuthDB(store, base / "setup-cache"))
        await accounts.create_user("bench", "bench-password-long-enough")
        await accounts.register_repo(NAME, private=False, owner_user="bench")
        await store.close()

    asyncio.run(register())
    node, url = serve_node(store_dir, base)
    try:
        env = {**hif_env(), "HIF_CONFIG_DIR": str(base / "hif-config")}
        cone = path_of(files // 2).split("/")[0]
        r = run([HIF, "clone", f"{url}/{NAME}", str(base / "clone"), "--sparse", cone, "--json"], base, env)
        doc = json.loads(r.out)
        ls = run([HIF, "ls", path_of(files - 1).split("/")[0], "--json"], base / "clone", env)
        return {"seconds": r.seconds, "objects": doc["fetched_objects"], "bytes": doc["fetched_bytes"],
                "client_kib": r.maxrss_kib, "node_kib": vm_hwm_kib(node.pid),
                "ls_entries": len(json.loads(ls.out)["entries"]), "ls_seconds": ls.seconds}
    finally:
        node.terminate()
        node.wait(timeout=20)


def git_commit_three(base: Path, files: int) -> dict[str, object]:
    """The same layout in git (fast-import), then one 3-file commit through a full index."""
    repo = base / "git"
    env = git_env(base)
    run(["git", "init", "-q", "--bare", str(repo)], base, env)
    stream = bytearray()
    for b in range(min(files, DISTINCT)):
        data = text_of(b)
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (b + 1, len(data), data)
    stream += b"commit refs/heads/main\ncommitter b <b@x> 0 +0000\ndata 6\nimport\n"
    for i in range(files):
        stream += b"M 100644 :%d %s\n" % (i % DISTINCT + 1, path_of(i).encode())
    stream += b"\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, env=env, input=bytes(stream), check=True)
    index_env = {**env, "GIT_INDEX_FILE": str(base / "git-index"), "GIT_DIR": str(repo)}
    t0 = time.perf_counter()
    peak = 0
    r = run(["git", "read-tree", "main"], base, index_env)
    peak = max(peak, r.maxrss_kib)
    rng = Random(files)
    for k in range(3):
        oid = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=base, env=index_env,
                             input=f"changed {k}\n".encode(), capture_output=True, check=True).stdout
        r = run(["git", "update-index", "--cacheinfo", f"100644,{oid.decode().strip()},"
                 f"{path_of(rng.randrange(files))}"], base, index_env)
        peak = max(peak, r.maxrss_kib)
    tree = run(["git", "write-tree"], base, index_env)
    peak = max(peak, tree.maxrss_kib)
    commit = subprocess.run(["git", "commit-tree", tree.out.strip(), "-p", "main", "-m", "three"], cwd=base,
                            env=index_env, capture_output=True, check=True).stdout.decode().strip()
    run(["git", "update-ref", "refs/heads/main", commit], base, index_env)
    return {"seconds": time.perf_counter() - t0, "kib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,1000000", help="file counts, comma separated")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    print(f"scale benchmark on {machine()}\n")
    rows = []
    results = {}
    for files in parse_ints(args.sizes):
        with workdir(f"hif-scale-{files}-", keep=args.keep) as base:
            store_dir = base / "store"
            built = build_elsewhere(store_dir, files)
            landed = asyncio.run(land_three(store_dir, files))
            clone = sparse_clone(base, store_dir, files)
            git = git_commit_three(base, files)
            results[files] = (landed, clone, git)
            rows.append([f"{files:,}", secs(built), f"{landed['puts']} / {landed['calls']}",
                         secs(float(landed["seconds"])), f"{landed['diff_reads']} ({landed['diff_paths']} paths)",
                         f"{clone['objects']} / {secs(float(clone['seconds']))}",
                         mib(int(clone["client_kib"])), mib(int(clone["node_kib"])),
                         secs(float(git["seconds"])), mib(int(git["kib"])),
                         ratio(float(git["seconds"]), float(landed["seconds"]))])
    print(table(["files", "build", "land 3: puts / calls", "land 3: time", "diff: reads",
                 "sparse clone: objects / time", "clone RSS", "node RSS", "git 3-file commit",
                 "git RSS", "git/hif"], rows))
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, big = results[sizes[0]][0], results[sizes[-1]][0]
        growth = int(big["puts"]) / max(1, int(small["puts"]))
        print(f"\nobject writes for a 3-file landing: {small['puts']} at {sizes[0]:,} files, {big['puts']} at "
              f"{sizes[-1]:,} files ({growth:.1f}x for {sizes[-1] // sizes[0]:,}x the files): "
              f"same order {'met' if growth < 3 else 'NOT met'}")
    node_peak = max(int(r[1]["node_kib"]) for r in results.values()) / 1024
    print(f"node peak memory while serving the sparse clone: {node_peak:.0f} MiB "
          f"(target < {NODE_TARGET_MIB} MiB: {'met' if node_peak < NODE_TARGET_MIB else 'NOT met'})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
