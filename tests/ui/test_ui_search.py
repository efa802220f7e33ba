"""The search page over plain HTTP (no JavaScript): highlighted snippets, facets that are links,
links to the exact event, open sessions marked, a private repository invisible to strangers (also
in counts and facets), bad queries answered with the page and a 400, and htmx's partial answers."""

from __future__ import annotations

import html
import re

import httpx
from test_ui_http import get, logged_in
from ui_seed import PRIVATE, PUBLIC, Seeded


def hits(page: str) -> list[str]:
    return re.findall(r'<li class="hit">(.*?)</li>', page, re.S)


def test_results_show_the_matching_text_and_link_to_the_event(seeded: Seeded) -> None:
    r = get(seeded, "/search", params={"q": "curses"})
    assert r.status_code == 200
    (hit,) = hits(r.text)
    assert "Create the widget library" in hit and "<mark>curses</mark>" in hit
    assert "rejected alternative" in hit
    sid = seeded.sessions["Create the widget library"]
    link = re.search(rf'href="(/{PUBLIC}/sessions/{sid}#e(\d+))"', hit)
    assert link is not None
    session_page = get(seeded, link.group(1).split("#")[0]).text
    anchor = re.search(rf'<li class="event ev-decide[^"]*" id="e{link.group(2)}"', session_page)
    assert anchor is not None  # the link lands on the decision that rejected curses
    # the phrase and prefix forms, the open session marked as such
    assert len(hits(get(seeded, "/search", params={"q": '"second frame"'}).text)) == 1
    spin = hits(get(seeded, "/search", params={"q": "spinn*"}).text)
    assert len(spin) >= 2 and all("<mark>" in h for h in spin)
    (open_hit,) = hits(get(seeded, "/search", params={"q": "docstring"}).text)
    assert "Document every widget" in open_hit and 'class="badge open"' in open_hit


def test_facets_are_links_that_narrow_the_results(seeded: Seeded) -> None:
    page = get(seeded, "/search", params={"q": "spinner"}).text
    facets = page.split('class="facets"', 1)[1].split("</aside>", 1)[0]
    links = dict((html.unescape(label), html.unescape(href))
                 for href, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', facets))
    assert {"agent", "human", "claude", "ana", PUBLIC}.issubset(links)
    agent_only = get(seeded, links["agent"]).text
    assert all("role-agent" in h for h in hits(agent_only)) and hits(agent_only)
    by_claude = get(seeded, links["claude"]).text
    assert "Add a spinner widget" in by_claude and "Fix the spinner" not in by_claude
    decisions = get(seeded, "/search", params={"q": "spinner", "kind": "decision"}).text
    assert all("decision:" in h for h in hits(decisions))


def test_private_sessions_never_reach_strangers(seeded: Seeded) -> None:
    stranger = logged_in(seeded, "stranger")
    for client in (None, stranger):
        for q in ("secret", "secret plan", "writ*", "plan"):
            page = get(seeded, "/search", client, params={"q": q}).text
            assert "Write the secret plan" not in page and PRIVATE not in page, q
        for params in ({"q": "secret", "repo": PRIVATE}, {"q": "secret", "author": "admin"}):
            page = get(seeded, "/search", client, params=params).text
            assert "Write the secret plan" not in page and '<span class="count">0</span>' in page
    ana = logged_in(seeded)  # a maintainer of the organisation reads it
    page = ana.get("/search", params={"q": "secret plan"}).text
    assert "Write the secret plan" in page and PRIVATE in page


def test_bad_queries_are_a_400_page_with_the_reason(seeded: Seeded) -> None:
    for q in ('"unclosed', "*", "re*try", "x" * 300):
        r = get(seeded, "/search", params={"q": q})
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
        assert 'role="alert"' in r.text and "Traceback" not in r.text
        assert '<form id="search-form"' in r.text  # the page, with the form to fix the query
    r = get(seeded, "/search", params={"q": "spinner", "since": "last week"})
    assert r.status_code == 400 and "YYYY-MM-DD" in r.text


def test_htmx_gets_the_results_alone_and_followed_nodes_apart(seeded: Seeded) -> None:
    r = httpx.get(seeded.forge.url + "/search", params={"q": "spinner"}, timeout=60,
                  headers={"HX-Request": "true", "HX-Target": "search-results"})
    assert r.status_code == 200 and "<html" not in r.text and 'id="search-results"' in r.text
    page = get(seeded, "/search", params={"q": "spinner", "remote": "1"}).text
    assert 'id="peers"' in page and "Add a spinner widget" in page
    r = httpx.get(seeded.forge.url + "/search", params={"q": "spinner", "remote": "1"}, timeout=60,
                  headers={"HX-Request": "true", "HX-Target": "peers"})
    assert r.status_code == 200 and "<html" not in r.text and r.text.lstrip().startswith('<section id="peers"')


def test_the_search_box_is_on_every_page(seeded: Seeded) -> None:
    for path in ("/", f"/{PUBLIC}", f"/{PUBLIC}/sessions", "/login", "/search"):
        page = get(seeded, path).text
        assert re.search(r'<form class="search" role="search" action="/search" method="get">', page), path
        assert 'id="site-q" name="q"' in page
