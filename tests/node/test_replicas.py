"""Two ``micelio serve`` processes over one store behave as one node, on the embedded store and on S3."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from forge import Forge, start_forge

from hif.mainline import LandingRecord
from hif.objects import FILE, blob_bytes, digest, pack

CLIENTS = 12


def land_one(forge: Forge, url: str, token: str, repo: str, n: int) -> tuple[str, int]:
    """A client's whole session through one replica: start, upload, write, land."""
    content = f"client {n}\n".encode()
    oid, stored = digest(blob_bytes(content)), pack(blob_bytes(content))
    base = f"/api/v1/repos/{repo}"
    sid = forge.api("POST", f"{base}/sessions", token, {"goal": f"client {n}"}, url=url).data["id"]
    assert forge.api("POST", f"{base}/objects/put", token, {"objects": [stored]}, url=url).status_code == 200
    ev = {"type": "write", "path": f"files/{n}.txt", "kind": FILE, "blob": oid}
    assert forge.api("POST", f"{base}/sessions/{sid}/events", token, {"events": [ev]}, url=url).status_code == 200
    r = forge.api("POST", f"{base}/sessions/{sid}/land", token, {}, url=url)
    assert r.status_code == 200, r.data
    return sid, r.data["position"]


def check_two_replicas(forge: Forge) -> None:
    second = forge.start_replica()
    first = forge.urls[0]
    # a token created through one replica works on the other at once; a revocation too
    r = forge.api("POST", "/api/v1/tokens", forge.admin_token, {"scope": "write", "name": "x"}, url=first)
    token, tid = r.data["token"], r.data["id"]
    assert forge.api("GET", "/api/v1/whoami", token, url=second).data["user"] == "admin"
    forge.api("POST", "/api/v1/repos", token, {"name": "acme/shared"}, url=second)
    assert forge.api("GET", "/api/v1/repos/acme/shared", token, url=first).status_code == 200

    # clients landing through both replicas at once: nothing lost, nothing twice, no gap
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda n: land_one(forge, (first, second)[n % 2], token, "acme/shared", n),
                                range(CLIENTS)))
    log = forge.api("GET", "/api/v1/repos/acme/shared/log?limit=500", token, url=second).data
    assert [p for p, _ in log["records"]] == list(range(1, log["head"] + 1))  # gap-free
    where = {s.session: p for p, raw in log["records"] for s in LandingRecord.from_bytes(raw, p).sessions}
    # every client's session landed exactly once, where the node said (group landing may put several
    # sessions in one record)
    assert len(where) == CLIENTS and where == dict(results)
    tree = forge.api("GET", "/api/v1/repos/acme/shared/tree?path=files", token, url=first).data
    assert len(tree["entries"]) == CLIENTS

    forge.api("DELETE", f"/api/v1/tokens/{tid}", forge.admin_token, url=second)
    assert forge.api("GET", "/api/v1/whoami", token, url=second).status_code == 401
    # the other replica notices within its auth cache age (0.2 s in tests); bounded wait
    import time

    deadline = time.monotonic() + 5
    while forge.api("GET", "/api/v1/whoami", token, url=first).status_code != 401:
        assert time.monotonic() < deadline, "revocation did not reach the other replica"
        time.sleep(0.1)


def test_two_replicas_over_the_embedded_store(forge: Forge) -> None:
    check_two_replicas(forge)


@pytest.mark.slow
def test_two_replicas_over_s3(tmp_path: Path, s3_server: str) -> None:
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    forge = start_forge(tmp_path / "forge", store=f"s3://micelio-{uuid.uuid4().hex[:12]}/node", env=env)
    try:
        assert forge.api("GET", "/healthz").json()["store"] == "s3"
        check_two_replicas(forge)
    finally:
        forge.stop()


def test_a_user_made_elsewhere_logs_in_at_once(tmp_path: Path) -> None:
    """A user created by ``micelio admin`` (or on another replica) while the node holds an auth
    database it would not check again for an hour can log in at once: an unknown name makes the
    node look at the store before it says no."""
    import re

    import httpx

    forge = start_forge(tmp_path / "n", env={"MICELIO_AUTH_MAX_AGE": "3600"})
    try:
        client = httpx.Client(base_url=forge.url, timeout=60)

        def log_in() -> httpx.Response:
            page = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            return client.post("/login", data={"user": "latecomer", "password": "long-password-1",
                                               "csrf": csrf.group(1), "next": "/"})

        assert log_in().status_code == 401  # unknown: the node has read its auth database now
        forge.micelio("admin", "user", "create", "latecomer", "--password-stdin", input="long-password-1\n")
        r = log_in()
        assert r.status_code == 302, r.text[-500:]
    finally:
        forge.stop()


def test_a_replica_streams_a_session_without_reading_its_events_back(forge: Forge) -> None:
    """Appending to a session and landing it through the replica that wrote it reads none of its
    earlier events back (a damaged one on disk is never noticed), so a streamed landing costs the
    same at its 2nd event as at its 500th; yet an event another replica appended meanwhile is never
    missed: the replica lists what came after its own copy before it lands that copy."""
    second = forge.start_replica()
    first = forge.urls[0]
    r = forge.api("POST", "/api/v1/tokens", forge.admin_token, {"scope": "write", "name": "w"}, url=first)
    token = r.data["token"]
    forge.api("POST", "/api/v1/repos", token, {"name": "acme/stream"}, url=first)
    base = "/api/v1/repos/acme/stream"

    def put(text: str) -> bytes:
        canonical = blob_bytes(text.encode())
        r = forge.api("POST", f"{base}/objects/put", token, {"objects": [pack(canonical)]}, url=first)
        assert r.status_code == 200, r.data
        return digest(canonical)

    def append(sid: str, url: str, event: dict[str, object], **extra: object) -> None:
        r = forge.api("POST", f"{base}/sessions/{sid}/events", token, {"events": [event], **extra}, url=url)
        assert r.status_code == 200, r.data

    def damage(sid: str, seq: int) -> None:
        (found,) = Path(forge.store).rglob(f"sessions/{sid}/events/{seq:08d}")
        found.write_bytes(b"\xff not an event")

    say = {"type": "say", "text": "first thoughts"}
    # 1. one replica throughout; seq 1 is damaged on disk after it was written
    sid = forge.api("POST", f"{base}/sessions", token, {"goal": "streamed"}, url=first).data["id"]
    append(sid, first, say)
    damage(sid, 1)
    write = {"type": "write", "path": "a.txt", "kind": FILE, "blob": put("a\n")}
    append(sid, first, write, next_seq=2)  # with or without next_seq: neither reads seq 1
    append(sid, first, {"type": "write", "path": "b.txt", "kind": FILE, "blob": put("b\n")})
    r = forge.api("POST", f"{base}/sessions/{sid}/land", token, {}, url=first)
    assert r.status_code == 200, r.data
    tree = forge.api("GET", f"{base}/tree", token, url=first).data
    assert sorted(e[0] for e in tree["entries"]) == ["a.txt", "b.txt"]

    # 2. an event appended through the other replica is in the landing (variants: before the first
    # write, between two of this replica's, and as the last event)
    for k, where in enumerate(("first", "middle", "last")):
        sid = forge.api("POST", f"{base}/sessions", token, {"goal": f"two replicas {k}"}, url=first).data["id"]
        ours = [{"type": "write", "path": f"{where}/ours-{i}.txt", "kind": FILE, "blob": put(f"{k}{i}\n")}
                for i in range(2)]
        theirs = {"type": "write", "path": f"{where}/theirs.txt", "kind": FILE, "blob": put(f"t{k}\n")}
        order = {"first": [(second, theirs), (first, ours[0]), (first, ours[1])],
                 "middle": [(first, ours[0]), (second, theirs), (first, ours[1])],
                 "last": [(first, ours[0]), (first, ours[1]), (second, theirs)]}[where]
        for url, event in order:
            append(sid, url, event)
        r = forge.api("POST", f"{base}/sessions/{sid}/land", token, {}, url=first)
        assert r.status_code == 200, r.data
        tree = forge.api("GET", f"{base}/tree?path={where}", token, url=first).data
        assert sorted(e[0] for e in tree["entries"]) == ["ours-0.txt", "ours-1.txt", "theirs.txt"], where
