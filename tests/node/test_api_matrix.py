"""The auth and bad-input matrix over every route in ``node.api.ROUTES``.

Each route gets one concrete request (``CASES``); the matrix then sends it without a token, with
tokens that lack the scope or role, to an unknown and to an unreadable private repository, with a
malformed and an oversized body, and checks the status. A route without a case fails the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from forge import Forge, start_forge

from node.api import ROUTES, Route

PRIVATE = "acme/private"
PUBLIC = "acme/public"


@dataclass
class World:
    forge: Forge
    admin: str  # site admin, admin scope
    reader: str  # reader role on PRIVATE, write-scope token
    read_only: str  # admin user, read-scope token
    stranger: str  # a user with no role on PRIVATE, write-scope token
    bound: str  # admin user, token bound to PUBLIC
    agent: str  # agent token for `other_session`
    session: str  # an open session in PRIVATE
    other_session: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    forge = start_forge(tmp_path_factory.mktemp("matrix"))
    try:
        a = forge.admin_token
        for name, private in ((PRIVATE, True), (PUBLIC, False)):
            assert forge.api("POST", "/api/v1/repos", a, {"name": name, "private": private}).status_code == 201
        reader = forge.user("rita")
        forge.api("PUT", f"/api/v1/repos/{PRIVATE}/members/rita", a, {"role": "reader"})
        sid = forge.api("POST", f"/api/v1/repos/{PRIVATE}/sessions", a, {"goal": "matrix"}).data["id"]
        other = forge.api("POST", f"/api/v1/repos/{PRIVATE}/sessions", a, {"goal": "agent's"}).data["id"]
        agent = forge.api("POST", f"/api/v1/repos/{PRIVATE}/sessions/{other}/tokens", a, {}).data["token"]
        yield World(
            forge=forge, admin=a, reader=reader,
            read_only=forge.micelio("admin", "token", "create", "admin", "--scope", "read").stdout.strip(),
            stranger=forge.user("sam"),
            bound=forge.micelio("admin", "token", "create", "admin", "--scope", "admin",
                                "--repo", PUBLIC).stdout.strip(),
            agent=agent, session=sid, other_session=other,
        )
    finally:
        forge.stop()


ID = b"\x01" * 32
MIRROR = "/api/v1/mirrors/<host>/<owner>/<name>"


def CASES(w: World, repo: str) -> dict[tuple[str, str], tuple[str, dict[str, Any] | None]]:
    """One well-formed request per route: (path, body)."""
    base = f"/api/v1/repos/{repo}"
    s = f"{base}/sessions/{w.session}"
    mirror = f"/api/v1/mirrors/127.0.0.1:9/{repo}"
    return {
        ("GET", "/api/v1/whoami"): ("/api/v1/whoami", None),
        ("POST", "/api/v1/login"): ("/api/v1/login", {"user": "admin", "password": "wrong"}),
        ("GET", "/api/v1/tokens"): ("/api/v1/tokens", None),
        ("POST", "/api/v1/tokens"): ("/api/v1/tokens", {"scope": "read"}),
        ("DELETE", "/api/v1/tokens/<tid>"): ("/api/v1/tokens/nosuchtoken", None),
        ("POST", "/api/v1/orgs"): ("/api/v1/orgs", {"name": "neworg"}),
        ("PUT", "/api/v1/orgs/<org>/members/<user>"): ("/api/v1/orgs/acme/members/rita", {"role": "reader"}),
        ("DELETE", "/api/v1/orgs/<org>/members/<user>"): ("/api/v1/orgs/acme/members/rita", None),
        ("GET", "/api/v1/repos"): ("/api/v1/repos", None),
        ("GET", "/api/v1/search"): ("/api/v1/search?q=hello", None),
        ("POST", "/api/v1/repos"): ("/api/v1/repos", {"name": "acme/new"}),
        ("GET", "/api/v1/repos/<owner>/<name>"): (base, None),
        ("PATCH", "/api/v1/repos/<owner>/<name>"): (base, {"description": "matrix"}),
        # never the full name: should a token ever pass the checks, nothing is deleted
        ("DELETE", "/api/v1/repos/<owner>/<name>"): (f"{base}?confirm=not-this-one", None),
        ("PUT", "/api/v1/repos/<owner>/<name>/members/<user>"): (f"{base}/members/sam", {"role": "reader"}),
        ("DELETE", "/api/v1/repos/<owner>/<name>/members/<user>"): (f"{base}/members/sam", None),
        ("POST", "/api/v1/repos/<owner>/<name>/objects/have"): (f"{base}/objects/have", {"ids": [ID]}),
        ("POST", "/api/v1/repos/<owner>/<name>/objects/get"): (f"{base}/objects/get", {"ids": [ID]}),
        ("POST", "/api/v1/repos/<owner>/<name>/objects/stream"): (f"{base}/objects/stream", {"ids": [ID]}),
        ("POST", "/api/v1/repos/<owner>/<name>/objects/put"): (f"{base}/objects/put", {"objects": []}),
        ("GET", "/api/v1/repos/<owner>/<name>/head"): (f"{base}/head", None),
        ("GET", "/api/v1/repos/<owner>/<name>/log"): (f"{base}/log", None),
        ("GET", "/api/v1/repos/<owner>/<name>/tree"): (f"{base}/tree", None),
        ("GET", "/api/v1/repos/<owner>/<name>/blame"): (f"{base}/blame?path=f", None),
        ("GET", "/api/v1/repos/<owner>/<name>/commits/<sha>"): (f"{base}/commits/{'0' * 40}", None),
        ("POST", "/api/v1/repos/<owner>/<name>/scan"): (f"{base}/scan", {"since": 0, "until": 0, "items": []}),
        ("GET", "/api/v1/repos/<owner>/<name>/landings/<position>/agent-trace"):
            (f"{base}/landings/1/agent-trace", None),
        ("GET", "/api/v1/repos/<owner>/<name>/sessions"): (f"{base}/sessions", None),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions"): (f"{base}/sessions", {"goal": "g"}),
        ("GET", "/api/v1/repos/<owner>/<name>/sessions/<sid>"): (s, None),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/events"):
            (f"{s}/events", {"events": [{"type": "say", "text": "hi"}]}),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/land"): (f"{s}/land", {}),
        ("POST", "/api/v1/repos/<owner>/<name>/land"): (f"{base}/land", {"goal": "g"}),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/abandon"): (f"{s}/abandon", {}),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/tokens"): (f"{s}/tokens", {}),
        # checks: the result cache, attestations, users' keys
        ("GET", "/api/v1/repos/<owner>/<name>/cache/checks/<hash>"): (f"{base}/cache/checks/{'0' * 64}", None),
        ("PUT", "/api/v1/repos/<owner>/<name>/cache/checks/<hash>"):
            (f"{base}/cache/checks/{'0' * 64}", {"result": b"", "log": b""}),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/attest"):
            (f"{s}/attest", {"attestation": {}, "signature": b""}),
        ("PUT", "/api/v1/keys"): ("/api/v1/keys", {"public_key": ID}),
        # federation: offers, mirrors (read-only, public), administration
        ("GET", "/api/v1/repos/<owner>/<name>/offers"): (f"{base}/offers", None),
        ("GET", "/api/v1/repos/<owner>/<name>/offers/<oid>"): (f"{base}/offers/{'0' * 20}", None),
        ("POST", "/api/v1/repos/<owner>/<name>/offers/<oid>/land"): (f"{base}/offers/{'0' * 20}/land", {}),
        ("POST", "/api/v1/repos/<owner>/<name>/offers/<oid>/reject"):
            (f"{base}/offers/{'0' * 20}/reject", {"reason": "no"}),
        ("POST", "/api/v1/repos/<owner>/<name>/sessions/<sid>/offer"):
            (f"{s}/offer", {"target": "http://127.0.0.1:9/acme/x"}),
        ("GET", "/api/v1/repos/<owner>/<name>/sessions/<sid>/offers"): (f"{s}/offers", None),
        ("GET", "/api/v1/mirrors"): ("/api/v1/mirrors", None),
        **{(method, MIRROR + suffix): (mirror + path, body) for method, suffix, path, body in (
            ("GET", "", "", None), ("GET", "/head", "/head", None), ("GET", "/log", "/log", None),
            ("GET", "/tree", "/tree", None), ("GET", "/blame", "/blame?path=f", None),
            ("GET", "/commits/<sha>", f"/commits/{'0' * 40}", None),
            ("POST", "/objects/have", "/objects/have", {"ids": [ID]}),
            ("POST", "/objects/get", "/objects/get", {"ids": [ID]}),
            ("POST", "/objects/stream", "/objects/stream", {"ids": [ID]}),
            ("GET", "/sessions/<sid>", f"/sessions/{w.session}", None),
            ("GET", "/verify", "/verify", None))},
        ("GET", "/api/v1/federation"): ("/api/v1/federation", None),
        ("POST", "/api/v1/federation/follow"): ("/api/v1/federation/follow", {"url": "http://127.0.0.1:9/a/b"}),
        ("POST", "/api/v1/federation/unfollow"): ("/api/v1/federation/unfollow", {"url": "http://127.0.0.1:9/a/b"}),
    }


def ids(routes: list[Route]) -> list[str]:
    return [f"{r.method} {r.rule}" for r in routes]


REPO_ROUTES = [r for r in ROUTES if "<owner>" in r.rule]
AUTH_ROUTES = [r for r in ROUTES if r.access != "public"]
BODY_ROUTES = [r for r in ROUTES if r.method in ("POST", "PUT", "PATCH")]


def send(w: World, route: Route, token: str | None, repo: str = PRIVATE, *, raw: bytes | None = None) -> Any:
    path, body = CASES(w, repo)[(route.method, route.rule)]
    if raw is None:
        return w.forge.api(route.method, path, token, body)
    import httpx

    headers = {"Content-Type": "application/cbor"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(route.method, w.forge.url + path, headers=headers, content=raw, timeout=60)


def test_every_route_has_a_case(world: World) -> None:
    assert set(CASES(world, PRIVATE)) == {(r.method, r.rule) for r in ROUTES}


@pytest.mark.parametrize("route", AUTH_ROUTES, ids=ids(AUTH_ROUTES))
def test_no_token_is_401(world: World, route: Route) -> None:
    r = send(world, route, None)
    assert r.status_code == 401 and r.data["error"] == "auth_required"
    assert "Bearer" in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("route", ROUTES, ids=ids(ROUTES))
def test_bad_token_is_401(world: World, route: Route) -> None:
    assert send(world, route, "mcl_not-a-real-token").status_code == 401


@pytest.mark.parametrize("route", REPO_ROUTES, ids=ids(REPO_ROUTES))
def test_unknown_and_unreadable_repositories_are_404(world: World, route: Route) -> None:
    assert send(world, route, world.admin, "acme/missing").status_code == 404
    r = send(world, route, world.stranger)  # PRIVATE exists, but sam may not read it
    assert r.status_code == 404 and "acme/private" in r.data["message"]


@pytest.mark.parametrize("route", REPO_ROUTES, ids=ids(REPO_ROUTES))
def test_token_for_another_repository_is_403(world: World, route: Route) -> None:
    assert send(world, route, world.bound).status_code == 403


WRITE_ROUTES = [r for r in REPO_ROUTES if r.access in ("write", "admin")]


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=ids(WRITE_ROUTES))
def test_reader_role_and_read_scope_cannot_write(world: World, route: Route) -> None:
    assert send(world, route, world.reader).status_code == 403  # role too low
    assert send(world, route, world.read_only).status_code == 403  # scope too low


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.agent and r.access != "public"],
                         ids=ids([r for r in ROUTES if not r.agent and r.access != "public"]))
def test_agent_token_only_works_on_its_session(world: World, route: Route) -> None:
    assert send(world, route, world.agent).status_code == 403


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids(BODY_ROUTES))
def test_malformed_cbor_is_400(world: World, route: Route) -> None:
    for raw in (b"\xff\xfe", b"\x9f\x01", b"\x01"):  # garbage, unterminated array, not a map
        r = send(world, route, world.admin, raw=raw)
        assert r.status_code == 400, (raw, r.content)


def _claim_length(w: World, route: Route, length: int) -> int:
    """Send only the headers of a request announcing ``length`` body bytes; return the status."""
    import socket
    from urllib.parse import urlsplit

    path, _ = CASES(w, PRIVATE)[(route.method, route.rule)]
    u = urlsplit(w.forge.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        head = (f"{route.method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                f"Authorization: Bearer {w.admin}\r\nContent-Type: application/cbor\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids(BODY_ROUTES))
def test_oversized_body_is_413(world: World, route: Route) -> None:
    assert _claim_length(world, route, route.limit + 1) == 413


def test_oversized_body_without_length_is_413(world: World) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the node counts as it reads
        yield b"\xa0"
        for _ in range(17):
            yield b" " * 65536

    import httpx

    r = httpx.post(world.forge.url + "/api/v1/login", content=chunks(), timeout=60,
                   headers={"Content-Type": "application/cbor"})
    assert r.status_code == 413


def test_bad_paths_and_missing_objects_are_422(world: World) -> None:
    f, a, s = world.forge, world.admin, world.session
    base = f"/api/v1/repos/{PRIVATE}/sessions/{s}/events"
    for path in ("../etc/passwd", "/abs", "a//b", "a/./b"):
        r = f.api("POST", base, a, {"events": [{"type": "delete", "path": path}]})
        assert r.status_code == 422, (path, r.data)
    r = f.api("POST", base, a, {"events": [{"type": "write", "path": "x", "kind": "f", "blob": ID}]})
    assert r.status_code == 422 and ID.hex() in r.data["message"]
    r = f.api("GET", f"/api/v1/repos/{PRIVATE}/tree?path=../x", a)
    assert r.status_code == 422


def test_the_matrix_changed_nothing(world: World, tmp_path: Path) -> None:
    f, a = world.forge, world.admin
    assert f.api("GET", f"/api/v1/repos/{PRIVATE}/head", a).data["position"] == 0
    s = f.api("GET", f"/api/v1/repos/{PRIVATE}/sessions/{world.session}", a).data
    assert s["state"] == "open" and len(s["events"]) == 1
