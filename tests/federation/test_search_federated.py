"""Search across forges: mirrors are indexed with their origin, and a node asks the nodes it follows
for their public matches (signed, under one deadline), merged and labelled by origin; a slow peer, a
failing peer and one that answers nonsense are reported, and never hold up or break the local results.
Two real nodes (fedkit) and small hostile servers of our own on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cbor2
import httpx
from fedkit import follow, host, land, make_repo, mirror_head, two_nodes, wait_for
from forge import Forge

from federation.search import DEADLINE


class Hostile:
    """A peer that answers the search endpoint badly: ``slow`` (answers long after the deadline),
    ``fails`` (500), ``nonsense`` (200 with what is not JSON) or ``huge`` (an endless body)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.asked: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if not self.path.startswith("/api/v1/search"):
                    self.send_error(404)
                    return
                outer.asked.append(dict(self.headers.items()))
                if outer.mode == "slow":
                    time.sleep(DEADLINE * 10)
                    body = b'{"results": [], "total": 0}'
                    self._send(200, body)
                elif outer.mode == "fails":
                    self._send(500, b"boom")
                elif outer.mode == "nonsense":
                    self._send(200, b"<html>not json")
                else:  # huge: more than any answer may be
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        self.wfile.write(b'{"results": [' + b'{"repo": "x"},' * 200_000)

            def _send(self, status: int, body: bytes) -> None:
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def hostiles(*modes: str) -> Iterator[list[Hostile]]:
    peers = [Hostile(m) for m in modes]
    try:
        yield peers
    finally:
        for p in peers:
            p.close()


def search(node: Forge, token: str | None = None, **params: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(node.url + "/api/v1/search", params=params, headers=headers, timeout=120)
    assert r.status_code == 200, r.content[:300]
    return cbor2.loads(r.content)  # type: ignore[no-any-return]


def test_mirrors_and_followed_nodes_are_searched(tmp_path: Path) -> None:
    with two_nodes(tmp_path) as (a, b, _peer), hostiles("slow", "fails", "nonsense", "huge") as bad:
        make_repo(a, "acme/api")
        make_repo(a, "acme/secret", private=True)
        land(a, "acme/api", {"f.txt": "1\n"}, "Pick a durian parser")
        land(a, "acme/secret", {"g.txt": "1\n"}, "Secret durian plans")
        make_repo(b, "bee/local")
        land(b, "bee/local", {"h.txt": "1\n"}, "Local durian notes")
        follow(b, a, "acme/api")
        wait_for(lambda: mirror_head(b, a, "acme/api") == 1, "the mirror to replicate")
        for h in bad:  # followed (the follows go nowhere, but each is a node B asks)
            r = b.api("POST", "/api/v1/federation/follow", b.admin_token, {"url": f"http://{h.host}/evil/repo"})
            assert r.status_code == 201, r.data

        # the mirror is indexed like a local repository, labelled with its origin
        def mirrored() -> Any:
            doc = search(b, q="durian")
            return doc if doc["total"] == 2 else None

        doc = wait_for(mirrored, "B's index to take in the mirror")
        origins = {h["repo"]: h["origin"] for h in doc["results"]}
        assert origins == {"acme/api": host(a), "bee/local": None}
        assert dict(doc["facets"]["origin"]) == {host(a): 1, "local": 1}
        assert search(b, q="durian", origin=host(a))["total"] == 1
        assert search(b, q="durian", origin="local")["total"] == 1

        # asking the followed nodes: A's public match (never its private one), the bad peers reported
        doc = search(b, q="durian", remote="1")
        assert doc["total"] == 2  # the local results are all there
        answers = {x["node"]: x for x in doc["remote"]}
        assert set(answers) == {host(a), *(h.host for h in bad)}
        mine = answers[host(a)]
        assert mine["error"] is None and mine["total"] == 1
        (hit,) = mine["results"]
        assert hit["repo"] == "acme/api" and hit["origin"] == host(a) and "Secret" not in str(mine)
        assert "did not answer within" in answers[bad[0].host]["error"]
        assert "500" in answers[bad[1].host]["error"]
        assert answers[bad[2].host]["error"] and not answers[bad[2].host]["results"]
        assert answers[bad[3].host]["error"] and not answers[bad[3].host]["results"]
        for h in bad:  # each was asked once, signed by B
            assert len(h.asked) == 1 and "Signature-Input" in h.asked[0] and "Signature" in h.asked[0]
        # a peer is asked for its own repositories only: A's answer never carries A's mirrors, and
        # B, asked by A, would answer without its mirror of A
        doc = search(b, q="durian", local="1")
        assert doc["total"] == 1 and doc["results"][0]["repo"] == "bee/local"
