"""What anonymous callers can take from a node: its peak memory under oversized and bomb requests.

A real node (``micelio serve`` on 127.0.0.1 over an embedded store) is measured idle (VmRSS from
``/proc/<pid>/status``), then N callers at once (N = 8 and 32 by default) each send one of:
a 60 MiB chunked body to the log-in form (``/login``), a 60 MiB chunked body to the API's log-in
(``/api/v1/login``), or a zstd bomb (a 32 KiB object expanding to 1 GiB) to ``objects/put`` (the only
one that needs a token: a writer's). Printed per N: the idle RSS, the peak RSS growth (VmHWM after
resetting it through ``/proc/<pid>/clear_refs``), the RSS two seconds after the flood, and how many
requests were refused (413, or 401 where a route wants a token first). A small warm-up flood runs
first, so that first-use costs (imports, templates) are not counted as the flood's.

Baseline: the same form flood against a plain Quart app under hypercorn with Quart's defaults (a
``/login`` route that reads ``await request.form``): what a form costs in the framework the node is
built on, without the node's streaming limits.

Run: ``.venv/bin/python bench/abuse.py [--callers 8,32] [--mib 60]``. Loopback only; a run takes
well under a minute. Target: peak growth under 64 MiB at N = 32, and back to idle afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "security")]

from abuse_kit import (  # noqa: E402
    MiB,
    reset_peak,
    send_chunked,
    status_kib,
    together,
    zstd_bomb,
)
from forge import start_forge  # noqa: E402
from s3server import free_port  # noqa: E402

BASELINE_APP = textwrap.dedent("""
    import asyncio, sys
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from quart import Quart, request

    app = Quart("baseline")

    @app.post("/login")
    async def login():
        form = await request.form
        return {"fields": len(form)}

    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    asyncio.run(serve(app, config))
""")


def flood(url: str, pid: int, n: int, mib: int, token: str | None, bomb: bytes | None) -> dict[str, int]:
    """N callers at once; the node's idle, peak and after figures in KiB, and the refusals."""
    targets: list[tuple[str, str, dict[str, str], bytes, int]] = [
        ("/login", "application/x-www-form-urlencoded", {}, b"user=", mib * MiB)]
    if token is not None and bomb is not None:
        import cbor2

        body = cbor2.dumps({"objects": [bomb]})
        targets += [("/api/v1/login", "application/cbor", {}, b"", mib * MiB),
                    ("/api/v1/repos/bench/abuse/objects/put", "application/cbor",
                     {"Authorization": f"Bearer {token}"}, body, len(body))]
    time.sleep(1.0)
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    results = together(n, lambda i: send_chunked(url, targets[i % len(targets)][0],
                                                 targets[i % len(targets)][4],
                                                 content_type=targets[i % len(targets)][1],
                                                 headers=targets[i % len(targets)][2],
                                                 head=targets[i % len(targets)][3]))
    peak = status_kib(pid, "VmHWM")
    time.sleep(2.0)
    after = status_kib(pid, "VmRSS")
    refused = sum(1 for r in results if getattr(r, "status", None) in (401, 413))
    return {"idle": idle, "peak": peak, "after": after, "refused": refused, "sent": n}


def show(label: str, n: int, f: dict[str, int]) -> None:
    growth = f["peak"] - f["idle"]
    print(f"{label:<22} N={n:<3} idle {f['idle'] / 1024:7.1f} MiB   peak growth {growth / 1024:7.1f} MiB"
          f" ({growth / f['idle']:5.2f}x idle)   after {f['after'] / 1024:7.1f} MiB   "
          f"refused {f['refused']}/{f['sent']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callers", default="8,32", help="comma-separated N")
    ap.add_argument("--mib", type=int, default=60, help="size of each oversized body")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    ns = [int(x) for x in args.callers.split(",")]
    bomb = zstd_bomb(1 << 30)
    print(f"bomb: {len(bomb) >> 10} KiB expanding to 1024 MiB; oversized bodies: {args.mib} MiB each",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
        forge = start_forge(Path(tmp) / "forge")
        try:
            token = forge.user("bench")
            assert forge.api("POST", "/api/v1/repos", token, {"name": "bench/abuse"}).status_code == 201
            pid = forge.procs[0].pid
            flood(forge.url, pid, 3, 1, token, bomb)  # warm-up: first-use imports, templates, caches
            for n in ns:
                show("micelio node", n, flood(forge.url, pid, n, args.mib, token, bomb))
        finally:
            forge.stop()
    if args.no_baseline:
        return
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        import httpx

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        flood(f"http://127.0.0.1:{port}", proc.pid, 1, 1, None, None)  # warm-up
        for n in ns:
            show("plain Quart (forms)", n, flood(f"http://127.0.0.1:{port}", proc.pid, n, args.mib,
                                                 None, None))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
