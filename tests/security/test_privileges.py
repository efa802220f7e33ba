"""Privileges, through the real interfaces (HTTP API, web UI, ``micelio admin``) of a real node:

- no one grants more than they hold (issue 14, item 8);
- tokens never outrank or outlive their maker (item 9);
- web sessions are revocable: every copy of a cookie dies (item 10);
- failed logins cannot lock a user out, throttling is per (user, address) with back-off, per address
  across users, and X-Forwarded-For counts only from a trusted proxy (item 11).

Client addresses are real: loopback has all of 127.0.0.0/8, so a client bound to 127.0.0.2 is
another address than one bound to 127.0.0.1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from forge import Forge, refused_start, start_forge

PASSWORD = "correct horse battery"
COOKIE = "micelio_session"


# -- helpers -----------------------------------------------------------------------------------------


def client(url: str, address: str = "127.0.0.1", **kw: Any) -> httpx.Client:
    """An HTTP client whose requests come from ``address`` (a loopback address)."""
    return httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address=address), **kw)


def call(c: httpx.Client, method: str, path: str, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """One CBOR API request; the decoded answer is ``response.data``."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    content = None
    if body is not None:
        content = cbor2.dumps(body)
        h["Content-Type"] = "application/cbor"
    r = c.request(method, path, headers=h, content=content)
    r.data = cbor2.loads(r.content) if r.headers.get("content-type", "").startswith("application/cbor") else None  # type: ignore[attr-defined]
    return r


def make_user(forge: Forge, name: str, password: str = PASSWORD) -> None:
    forge.micelio("admin", "user", "create", name, "--password-stdin", input=password + "\n")


def token(forge: Forge, user: str, scope: str, *extra: str) -> str:
    return forge.micelio("admin", "token", "create", user, "--scope", scope, *extra).stdout.strip()


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field in the page"
    return m.group(1)


def ui_login(c: httpx.Client, user: str, password: str = PASSWORD) -> httpx.Response:
    csrf = csrf_of(c.get("/login").text)
    return c.post("/login", data={"user": user, "password": password, "csrf": csrf, "next": "/account"})


def logged_in(url: str, user: str, address: str = "127.0.0.1") -> httpx.Client:
    c = client(url, address)
    r = ui_login(c, user)
    assert r.status_code == 302 and r.headers["location"] == "/account", r.text
    return c


def copy_of(url: str, c: httpx.Client) -> httpx.Client:
    """A second browser holding the very same session cookie (say, a stolen copy)."""
    return client(url, cookies={COOKIE: c.cookies[COOKIE]})


def is_logged_in(c: httpx.Client) -> bool:
    r = c.get("/account")
    assert r.status_code in (200, 302), r.status_code
    return r.status_code == 200


def api_login(c: httpx.Client, user: str, password: str, forwarded: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else None
    return call(c, "POST", "/api/v1/login", body={"user": user, "password": password}, headers=headers)


def until_throttled(c: httpx.Client, user: str, forwarded: str | None = None, most: int = 100) -> httpx.Response:
    """Wrong passwords until the answer is a 429 whose wait is over a second (429s count nothing,
    so a short wait is simply waited out); every answer on the way is a 401 or a 429."""
    for _ in range(most):
        r = api_login(c, user, "wrong", forwarded)
        assert r.status_code in (401, 429), r.status_code
        if r.status_code == 429 and int(r.headers["Retry-After"]) >= 2:
            return r
        if r.status_code == 429:
            time.sleep(0.2)
    raise AssertionError(f"{user} was never throttled")


@pytest.fixture
def world(forge: Forge) -> Iterator[Forge]:
    """Organisation ``acme`` (owner olivia, maintainer mia), its private repository ``acme/app``,
    olivia's own private ``olivia/tool`` with mia as an explicit maintainer and oscar as an explicit
    owner, and bob, who holds nothing."""
    for name in ("olivia", "mia", "oscar", "bob"):
        make_user(forge, name)
    forge.micelio("admin", "org", "create", "acme", "--owner", "olivia")
    forge.micelio("admin", "org", "member", "acme", "mia", "maintainer")
    forge.micelio("admin", "repo", "create", "acme/app", "--private")
    forge.micelio("admin", "repo", "create", "olivia/tool", "--private")
    forge.micelio("admin", "repo", "member", "olivia/tool", "mia", "maintainer")
    forge.micelio("admin", "repo", "member", "olivia/tool", "oscar", "owner")
    yield forge


# -- 8. no one grants more than they hold ------------------------------------------------------------


def test_a_maintainer_cannot_grant_or_take_ownership_through_the_api(world: Forge) -> None:
    f = world
    c = client(f.url)
    mia, olivia, bob = (token(f, u, "admin") for u in ("mia", "olivia", "bob"))
    refused = [
        # the organisation: promote oneself or another, demote or remove an owner
        ("PUT", "/api/v1/orgs/acme/members/mia", {"role": "owner"}),
        ("PUT", "/api/v1/orgs/acme/members/bob", {"role": "owner"}),
        ("PUT", "/api/v1/orgs/acme/members/olivia", {"role": "maintainer"}),
        ("PUT", "/api/v1/orgs/acme/members/olivia", {"role": "reader"}),
        ("DELETE", "/api/v1/orgs/acme/members/olivia", None),
        # a repository of the organisation: the org maintainer is a maintainer there
        ("PUT", "/api/v1/repos/acme/app/members/mia", {"role": "owner"}),
        ("PUT", "/api/v1/repos/acme/app/members/bob", {"role": "owner"}),
        ("PUT", "/api/v1/repos/acme/app/members/olivia", {"role": "writer"}),  # an org owner outranks mia
        # a user's repository where mia is an explicit maintainer, oscar an explicit owner
        ("PUT", "/api/v1/repos/olivia/tool/members/mia", {"role": "owner"}),
        ("PUT", "/api/v1/repos/olivia/tool/members/bob", {"role": "owner"}),
        ("PUT", "/api/v1/repos/olivia/tool/members/oscar", {"role": "maintainer"}),
        ("DELETE", "/api/v1/repos/olivia/tool/members/oscar", None),
    ]
    for method, path, body in refused:
        r = call(c, method, path, mia, body)
        assert r.status_code == 403, (method, path, body, r.status_code, r.data)
        assert "owner" in r.data["message"]
    # nothing changed: bob still sees neither private repository, mia still cannot act as an owner,
    # oscar still owns olivia/tool
    for repo in ("acme/app", "olivia/tool"):
        assert call(c, "GET", f"/api/v1/repos/{repo}", bob).status_code == 404
    assert call(c, "PUT", "/api/v1/orgs/acme/members/bob", mia, {"role": "owner"}).status_code == 403
    oscar = token(f, "oscar", "admin")
    assert call(c, "PUT", "/api/v1/repos/olivia/tool/members/bob", oscar, {"role": "reader"}).status_code == 200
    assert call(c, "DELETE", "/api/v1/repos/olivia/tool/members/bob", oscar).status_code == 200

    # what mia holds she may give: writer, maintainer (her own rank), and take back
    for role in ("writer", "maintainer"):
        assert call(c, "PUT", "/api/v1/orgs/acme/members/bob", mia, {"role": role}).status_code == 200
        assert call(c, "PUT", "/api/v1/repos/olivia/tool/members/bob", mia, {"role": role}).status_code == 200
    assert call(c, "DELETE", "/api/v1/orgs/acme/members/bob", mia).status_code == 200
    assert call(c, "DELETE", "/api/v1/repos/olivia/tool/members/bob", mia).status_code == 200
    # owners (and site admins) make owners
    assert call(c, "PUT", "/api/v1/repos/acme/app/members/bob", olivia, {"role": "owner"}).status_code == 200
    assert call(c, "PUT", "/api/v1/orgs/acme/members/bob", f.admin_token, {"role": "owner"}).status_code == 200
    assert call(c, "DELETE", "/api/v1/orgs/acme/members/bob", olivia).status_code == 200
    assert call(c, "DELETE", "/api/v1/repos/acme/app/members/bob", olivia).status_code == 200

    # an owner is never left without one: the last owner of acme cannot leave or step down, through
    # the API or `micelio admin` (which acts as a site admin, and keeps the rule)
    for method, body in (("DELETE", None), ("PUT", {"role": "maintainer"})):
        r = call(c, method, "/api/v1/orgs/acme/members/olivia", olivia, body)
        assert r.status_code == 400 and "last owner" in r.data["message"], r.data
    for role in ("none", "reader"):
        p = f.micelio("admin", "org", "member", "acme", "olivia", role, check=False)
        assert p.returncode != 0 and p.stderr.count("\n") == 1 and "last owner of acme" in p.stderr
    # a repository's namespace owner owns it whatever an explicit role would say: refused, not ignored
    r = call(c, "PUT", "/api/v1/repos/olivia/tool/members/olivia", oscar, {"role": "reader"})
    assert r.status_code == 400 and "namespace" in r.data["message"]
    r = call(c, "GET", "/api/v1/repos/olivia/tool", olivia)
    assert r.status_code == 200


def test_a_maintainer_cannot_grant_or_take_ownership_through_the_web_ui(world: Forge) -> None:
    f = world
    mia = logged_in(f.url, "mia")
    org = mia.get("/orgs/acme")
    assert org.status_code == 200 and "Add a member" in org.text
    assert "<option>owner</option>" not in org.text  # the form offers only what she may give
    csrf = csrf_of(org.text)
    for path, data in (
        ("/orgs/acme/members", {"user": "mia", "role": "owner"}),
        ("/orgs/acme/members", {"user": "bob", "role": "owner"}),
        ("/orgs/acme/members", {"user": "olivia", "role": "writer"}),
        ("/orgs/acme/members/olivia/remove", {}),
        ("/acme/app/settings/members", {"user": "mia", "role": "owner"}),
        ("/olivia/tool/settings/members", {"user": "bob", "role": "owner"}),
        ("/olivia/tool/settings/members", {"user": "oscar", "role": "reader"}),
        ("/olivia/tool/settings/members/oscar/remove", {}),
    ):
        r = mia.post(path, data={**data, "csrf": csrf})
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), (path, data, r.status_code)
        assert "owner" in r.text
    settings = mia.get("/olivia/tool/settings")
    assert settings.status_code == 200 and "<option>owner</option>" not in settings.text
    bob = token(f, "bob", "read")
    assert call(client(f.url), "GET", "/api/v1/repos/olivia/tool", bob).status_code == 404
    # the owner's page offers owner, and the owner may use it
    olivia = logged_in(f.url, "olivia")
    page = olivia.get("/orgs/acme")
    assert "<option>owner</option>" in page.text
    r = olivia.post("/orgs/acme/members", data={"user": "bob", "role": "owner", "csrf": csrf_of(page.text)})
    assert r.status_code == 302
    r = olivia.post("/orgs/acme/members/olivia/remove", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 302  # bob is an owner now, so olivia may leave
    bob_ui = logged_in(f.url, "bob")
    page = bob_ui.get("/orgs/acme")
    r = bob_ui.post("/orgs/acme/members/bob/remove", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 400 and "last owner" in r.text


# -- 9. tokens never outrank or outlive their maker --------------------------------------------------


def test_a_token_made_by_a_token_is_capped_at_its_maker(forge: Forge) -> None:
    f = forge
    c = client(f.url)
    make_user(f, "tess")
    assert call(c, "POST", "/api/v1/repos", f.admin_token, {"name": "tess/one"}).status_code == 201
    bound = token(f, "tess", "write", "--repo", "tess/one", "--expires", "1d")
    maker = call(c, "GET", "/api/v1/whoami", bound).data
    assert maker["repo"] == "tess/one" and maker["expires"] is not None

    for body in (
        {"scope": "admin"},  # more scope
        {"scope": "admin", "repo": "tess/one"},
        {"scope": "read", "repo": "tess/two"},  # another repository
        {"scope": "read", "repo": "admin/anything"},
        {"scope": "read", "repo": "tess/one", "expires_days": 2},  # a later expiry
        {"scope": "read", "repo": "tess/one", "expires_days": 36500},
        {"scope": "write", "repo": "tess/one", "expires_days": 1.01},
        {"expires_days": 1.01},
    ):
        r = call(c, "POST", "/api/v1/tokens", bound, body)
        assert r.status_code == 403, (body, r.status_code, r.data)
        assert r.data["error"] == "forbidden" and r.data["message"]
    # left out: the maker's own scope, repository and expiry; a narrower ask is kept
    for body, scope in (({}, "write"), ({"scope": "read"}, "read"), ({"name": "x", "expires_days": 0.5}, "write")):
        r = call(c, "POST", "/api/v1/tokens", bound, body)
        assert r.status_code == 201, (body, r.data)
        made = call(c, "GET", "/api/v1/whoami", r.data["token"]).data
        assert made["scope"] == scope and made["repo"] == "tess/one", (body, made)
        assert made["expires"] is not None and made["expires"] <= maker["expires"], (body, made)
    # "never" (no expiry asked for) from an expiring token: capped at the maker's expiry
    day = token(f, "tess", "write", "--expires", "1d")
    day_expires = call(c, "GET", "/api/v1/whoami", day).data["expires"]
    for body in ({"scope": "read", "expires_days": 2}, {"scope": "write", "expires_days": 3650}):
        assert call(c, "POST", "/api/v1/tokens", day, body).status_code == 403, body
    r = call(c, "POST", "/api/v1/tokens", day, {"scope": "write"})
    assert r.status_code == 201
    made = call(c, "GET", "/api/v1/whoami", r.data["token"]).data
    assert made["expires"] is not None and made["expires"] <= day_expires and made["repo"] is None
    # a read token makes no write token, whatever else it asks
    read = token(f, "tess", "read")
    for body in ({"scope": "write"}, {"scope": "admin", "expires_days": 1}):
        assert call(c, "POST", "/api/v1/tokens", read, body).status_code == 403

    # agent tokens: no later than the token that makes them (a week by default, capped, not refused)
    sid = call(c, "POST", "/api/v1/repos/tess/one/sessions", bound, {"goal": "agent work"}).data["id"]
    agent_url = f"/api/v1/repos/tess/one/sessions/{sid}/tokens"
    for body in ({"expires_days": 2}, {"expires_days": 30}):
        r = call(c, "POST", agent_url, bound, body)
        assert r.status_code == 403, (body, r.data)
    r = call(c, "POST", agent_url, bound, {})
    assert r.status_code == 201
    agent = call(c, "GET", "/api/v1/whoami", r.data["token"]).data
    assert agent["session"] == sid and agent["expires"] <= maker["expires"]
    # nothing refused was stored: three tokens by the CLI, and the 3 + 1 + 1 made by tokens
    tess = call(c, "GET", "/api/v1/tokens", day).data["tokens"]
    assert len(tess) == 3 + 5 and all(t["name"] in ("", "x", "agent for " + sid) for t in tess)


def test_a_browser_made_token_does_not_outlive_the_browser_session(forge: Forge) -> None:
    f = forge
    make_user(f, "tess")
    ui = logged_in(f.url, "tess")
    page = ui.get("/account").text
    for days in ("90", "31", "36500"):
        r = ui.post("/account/tokens", data={"name": f"long {days}", "scope": "write", "expires_days": days,
                                            "csrf": csrf_of(page)})
        assert r.status_code == 403 and "outlive" in r.text, (days, r.status_code)
    # empty: as long as this browser session (30 days), not "never"
    r = ui.post("/account/tokens", data={"name": "short", "scope": "write", "expires_days": "", "csrf": csrf_of(page)})
    assert r.status_code == 303  # post-redirect-get: the new token is shown once on the page it leads to
    r = ui.get(r.headers["location"])
    secret = re.search(r'id="new-token">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    made = call(client(f.url), "GET", "/api/v1/whoami", secret).data
    assert made["expires"] is not None and made["expires"] <= time.time() + 30 * 86400 + 60
    # the password again is the account itself: then a longer lifetime (or never) is granted
    r = ui.post("/account/tokens", data={"name": "ci", "scope": "read", "expires_days": "90",
                                        "password": "wrong", "csrf": csrf_of(page)})
    assert r.status_code == 403 and "wrong password" in r.text
    r = ui.post("/account/tokens", data={"name": "ci", "scope": "read", "expires_days": "90",
                                        "password": PASSWORD, "csrf": csrf_of(page)})
    assert r.status_code == 303
    listed = f.micelio("admin", "token", "list", "tess", "--json").stdout
    assert '"long' not in listed and '"short"' in listed and '"ci"' in listed


# -- 10. web sessions are revocable -------------------------------------------------------------------


def test_a_copied_session_cookie_stops_working(forge: Forge) -> None:
    f = forge
    make_user(f, "wendy")
    second = f.start_replica()

    def two_copies() -> tuple[httpx.Client, httpx.Client]:
        a = logged_in(f.url, "wendy")
        b = copy_of(f.url, a)
        assert is_logged_in(a) and is_logged_in(b)
        return a, b

    # log-out ends the session for every copy of the cookie, not just the browser that logged out
    a, b = two_copies()
    other = client(second, cookies={COOKIE: a.cookies[COOKIE]})  # the same cookie, on another replica
    assert is_logged_in(other)
    assert a.post("/logout", data={"csrf": csrf_of(a.get("/account").text)}).status_code == 302
    assert not is_logged_in(b)
    assert eventually(lambda: not is_logged_in(client(second, cookies={COOKIE: other.cookies[COOKIE]})))

    # a password change (here by the operator) ends them all
    a, b = two_copies()
    f.micelio("admin", "user", "passwd", "wendy", "--password-stdin", input=PASSWORD + "\n")
    assert eventually(lambda: not is_logged_in(copy_of(f.url, b)))
    assert not is_logged_in(a) and not is_logged_in(b)

    # disabling ends them for good: re-enabling does not bring the cookie back
    a, b = two_copies()
    f.micelio("admin", "user", "disable", "wendy")
    f.micelio("admin", "user", "disable", "wendy", "--enable")
    saved = b.cookies[COOKIE]
    assert eventually(lambda: not is_logged_in(client(f.url, cookies={COOKIE: saved})))
    assert not is_logged_in(client(second, cookies={COOKIE: saved}))

    # "sign out everywhere" on the account page: every session of the user, other devices too
    a, b = two_copies()
    laptop = logged_in(f.url, "wendy")
    r = a.post("/account/signout", data={"csrf": csrf_of(a.get("/account").text)})
    assert r.status_code == 302 and r.headers["location"] == "/login"
    for c in (a, b, laptop):
        assert not is_logged_in(c)

    # and by an admin: `micelio admin user signout`
    a, b = two_copies()
    p = f.micelio("admin", "user", "signout", "wendy")
    assert p.stdout.strip() == "ended 1 browser session(s) of wendy"
    assert eventually(lambda: not is_logged_in(copy_of(f.url, b)))
    assert not is_logged_in(a)
    p = f.micelio("admin", "user", "signout", "nobody", check=False)
    assert p.returncode != 0 and p.stderr.strip() == "error: no user nobody"

    # logging in again works, and a new session is independent of the ended ones
    a, b = two_copies()
    assert is_logged_in(a)


def eventually(check: Any, deadline: float = 20.0) -> bool:
    """Poll ``check`` until it holds: a change made through another process (``micelio admin``) or
    another replica reaches a replica within its ``auth_max_age`` (0.2 s in tests)."""
    end = time.monotonic() + deadline
    while True:
        if check():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


# -- 11. lock-outs cannot be used against a user -------------------------------------------------------


def test_failures_from_elsewhere_do_not_lock_the_owner_out(forge: Forge) -> None:
    f = forge
    make_user(f, "owner")
    attacker = client(f.url, "127.0.0.2")
    codes = [api_login(attacker, "owner", f"guess {i}").status_code for i in range(10)]
    assert set(codes) <= {401, 429} and 429 in codes, codes  # the attacker's address is slowed down
    until_throttled(attacker, "owner")
    assert api_login(attacker, "owner", PASSWORD).status_code == 429  # even with the right password
    # the owner, from their own address, is not: API and web log-in alike
    home = client(f.url, "127.0.0.1")
    r = api_login(home, "owner", PASSWORD)
    assert r.status_code == 200 and r.data["token"].startswith("mcl_")
    assert ui_login(client(f.url, "127.0.0.1"), "owner").status_code == 302
    # many addresses guessing one user: each is slowed down, the owner's own address still is not
    for i in range(5, 8):
        for _ in range(6):
            api_login(client(f.url, f"127.0.0.{i}"), "owner", "guess")
    assert api_login(home, "owner", PASSWORD).status_code == 200


def test_an_address_guessing_many_users_is_throttled(forge: Forge) -> None:
    f = forge
    make_user(f, "victim")
    guesser = client(f.url, "127.0.0.3")
    codes = []
    for i in range(40):  # one guess per user: no (user, address) count ever grows
        r = api_login(guesser, f"user{i}", "guess")
        codes.append(r.status_code)
        if r.status_code == 429:
            break
    assert codes[-1] == 429 and set(codes[:-1]) == {401}, codes
    r = until_throttled(guesser, "victim")
    assert api_login(guesser, "victim", PASSWORD).status_code == 429
    assert api_login(client(f.url, "127.0.0.4"), "victim", PASSWORD).status_code == 200
    # a back-off, not a lock: it starts small, and once the wait is over the address may try again
    wait = int(r.headers["Retry-After"])
    assert wait <= 4, wait
    time.sleep(wait + 0.5)
    assert api_login(guesser, "victim", PASSWORD).status_code == 200


def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    proxied = start_forge(tmp_path / "proxied", env={"MICELIO_TRUSTED_PROXIES": "127.0.0.1/32, ::1"})
    try:
        make_user(proxied, "owner")
        make_user(proxied, "victim")
        proxy = client(proxied.url, "127.0.0.1")  # a trusted reverse proxy in front of the node
        # an attacker behind the proxy: throttled as its own address...
        until_throttled(proxy, "owner", forwarded="198.51.100.7")
        # ...whatever it writes left of what the proxy appends
        r = api_login(proxy, "owner", PASSWORD, forwarded="192.0.2.1, 198.51.100.7")
        assert r.status_code == 429
        # the owner behind the same proxy is another client: not locked out
        r = api_login(proxy, "owner", PASSWORD, forwarded="198.51.100.8")
        assert r.status_code == 200
        r = api_login(proxy, "owner", PASSWORD, forwarded="203.0.113.9, 198.51.100.8, 127.0.0.1")
        assert r.status_code == 200  # trusted hops on the right are skipped
        # an untrusted peer's X-Forwarded-For is ignored: spoofing a new address per try gets nothing
        direct = client(proxied.url, "127.0.0.2")
        codes = [api_login(direct, "victim", "guess", forwarded=f"203.0.113.{i}").status_code for i in range(12)]
        assert 429 in codes, codes
        until_throttled(direct, "victim", forwarded="203.0.113.99")
        assert api_login(direct, "victim", PASSWORD, forwarded="198.51.100.8").status_code == 429
        # the access log names the client, not the proxy
        log = (proxied.root / "node-0.log").read_text()
        assert '"remote": "198.51.100.8"' in log and '"remote": "127.0.0.2"' in log
    finally:
        proxied.stop()
    # without the setting, the same header is ignored even from loopback
    plain = start_forge(tmp_path / "plain")
    try:
        make_user(plain, "owner")
        c = client(plain.url, "127.0.0.1")
        codes = [api_login(c, "owner", "guess", forwarded=f"198.51.100.{i}").status_code for i in range(12)]
        assert 429 in codes, codes
    finally:
        plain.stop()


def test_a_bad_trusted_proxy_setting_stops_the_node(tmp_path: Path) -> None:
    for bad in ("10.0.0.0/33", "not-a-network", "127.0.0.1, example.org"):
        err = refused_start(tmp_path, {"MICELIO_TRUSTED_PROXIES": bad})
        assert err.startswith("error: not an address or network"), (bad, err)


def test_concurrent_guesses_are_throttled_like_a_sequence(forge: Forge) -> None:
    """Guesses sent all at once, for one user (and for many users) from one address: each attempt
    counts before its password is verified, so a burst gets no more tries than a sequence would
    (5 per user and address, 20 per address, then a back-off), not one per parallel request."""
    import threading

    f = forge
    make_user(f, "target")

    def burst(address: str, users: list[str]) -> list[int]:
        codes: list[int] = []
        go = threading.Barrier(len(users))

        def one(user: str) -> None:
            with client(f.url, address) as c:
                go.wait()
                codes.append(api_login(c, user, "guess").status_code)

        threads = [threading.Thread(target=one, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(codes) <= {401, 429}, codes
        return codes

    one_user = burst("127.0.0.21", ["target"] * 40)
    assert one_user.count(401) <= 5 + 2, sorted(one_user)  # 5 free (2 more if the burst straggles)
    many_users = burst("127.0.0.22", [f"user{i}" for i in range(60)])
    assert many_users.count(401) <= 20 + 2, sorted(many_users)
    assert api_login(client(f.url, "127.0.0.23"), "target", PASSWORD).status_code == 200
