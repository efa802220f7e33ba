"""Why-search in a working copy (hif/search.py, ``hif search``): ranking and filters on a fixed
corpus, query syntax (good and bad), access confined in SQL, and an index that is derived: damaged,
deleted or out of step with the store, it is rebuilt from the store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hif
from hif.errors import BadQuery
from hif.search import MAX_QUERY, MAX_TERMS, Query, SearchIndex, fts_expression
from hif.store.base import drive

INDEX = Path(".hif") / "search.sqlite"


@pytest.fixture(autouse=True)
def author(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIF_AUTHOR", "ana")
    monkeypatch.delenv("HIF_ROLE", raising=False)


def land(repo: hif.Repository, goal: str, *, says: tuple[str, ...] = (), decide: tuple[str, str, list[str]] | None = None,
         files: dict[str, str] | None = None, author: str | None = None, role: str | None = None) -> str:
    with repo.start_session(goal, author=author, role=role) as s:
        for text in says:
            s.say(text, author=author, role=role)
        if decide:
            s.decide(decide[0], why=decide[1], alternatives=decide[2], author=author, role=role)
        for path, text in (files or {}).items():
            s.write(path, text)
    return s.id


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[tuple[hif.Repository, dict[str, str]]]:
    """A repository with a fixed history: who said and decided what, and one open session."""
    with hif.Repository.init(tmp_path / "r") as repo:
        ids = {
            "uploader": land(repo, "Make the uploader retry with backoff",
                             says=("the first attempt used a fixed sleep",),
                             decide=("exponential backoff with jitter", "avoids a thundering herd",
                                     ["a sqlite queue for retries", "fixed sleep"]),
                             files={"src/upload.py": "x\n"}),
            "cache": land(repo, "Cache parsed configs", author="bot", role="agent",
                          says=("we could retry reading the config",),
                          decide=("an LRU cache", "bounded memory", ["memcached"]),
                          files={"src/config.py": "x\n"}),
            "docs": land(repo, "Document the retry policy", files={"docs/retry.md": "x\n"}),
            "storage": land(repo, "Switch storage to sqlite", author="bob",
                            says=("memory use was fine before",),
                            decide=("use sqlite", "one file to back up", ["postgres"]),
                            files={"db.py": "x\n"}),
            "tidy1": land(repo, "Tidy the changelog wording", files={"CHANGES": "1\n"}),
            "tidy2": land(repo, "Tidy the changelog wording", files={"CHANGES": "2\n"}),
        }
        s = repo.start_session("Explore retry budgets")
        s.say("budget the retries per minute")
        ids["open"] = s.id
        yield repo, ids


def sessions(repo: hif.Repository, text: str, **kw: object) -> list[str]:
    return [h.session for h in repo.search(text, **kw).hits]  # type: ignore[arg-type]


def test_goals_and_decisions_outrank_the_conversation(corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    found = repo.search("retry").hits
    order = [h.session for h in found]
    assert set(order) == {ids["uploader"], ids["cache"], ids["docs"], ids["open"]}
    assert order[-1] == ids["cache"]  # said in its conversation only: last
    assert {h.session: h.kind for h in found}[ids["cache"]] == "conversation"
    assert {h.session: h.kind for h in found}[ids["docs"]] == "goal"
    # a decision's why above another session's conversation
    assert sessions(repo, "memory") == [ids["cache"], ids["storage"]]
    # equal text: the newer landing first
    assert sessions(repo, "changelog") == [ids["tidy2"], ids["tidy1"]]


def test_phrases_prefixes_and_word_forms(corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    assert sessions(repo, '"fixed sleep"') == [ids["uploader"]]
    assert sessions(repo, "sleep fixed") == [ids["uploader"]]  # words: any order
    assert sessions(repo, '"sleep fixed"') == []  # a phrase: this order only
    assert set(sessions(repo, "retr*")) == {ids["uploader"], ids["cache"], ids["docs"], ids["open"]}
    assert sessions(repo, "retrx*") == []
    assert ids["uploader"] in sessions(repo, "retries")  # word forms: retries ~ retry
    assert sessions(repo, "RETRY policy") == [ids["docs"]]  # every word must match, any case
    hit = repo.search("retry.md").hits[0]
    assert (hit.session, hit.kind) == (ids["docs"], "path")


def test_rejected_alternatives_and_the_exact_event(corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    both = repo.search("sqlite").hits
    assert [h.session for h in both] == [ids["storage"], ids["uploader"]]
    (rejected,) = repo.search("sqlite", kinds=("rejected",)).hits
    assert rejected.session == ids["uploader"] and rejected.kind == "rejected"
    assert any(hit and text == "sqlite" for text, hit in rejected.snippet)
    s = repo.load_session(ids["uploader"])
    (decide,) = s.of_type("decide")
    assert rejected.seq == decide["seq"]  # the link goes to the decision that rejected it
    (m,) = repo.search("memcached", kinds=("rejected",)).hits
    assert m.session == ids["cache"]
    assert repo.search("postgres", kinds=("decision", "goal")).hits == []


def test_filters_author_role_state(corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    assert set(sessions(repo, "retry", author="ANA")) == {ids["uploader"], ids["docs"], ids["open"]}
    assert sessions(repo, "retry", role="agent") == [ids["cache"]]
    (open_hit,) = repo.search("retry", state="open").hits
    assert (open_hit.session, open_hit.state, open_hit.position) == (ids["open"], "open", None)
    assert repo.search("budget").hits[0].state == "open"
    assert all(h.state == "landed" for h in repo.search("retry", state="landed").hits)
    page = repo.search("retr*", limit=2)
    assert len(page.hits) == 2 and page.total == 4 and page.next == 2
    rest = repo.search("retr*", limit=2, offset=2)
    assert {h.session for h in page.hits}.isdisjoint({h.session for h in rest.hits})


def test_open_session_is_indexed_as_it_grows_and_replaced_when_it_lands(
        corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    assert sessions(repo, "quota") == []
    handle = repo.session()
    assert handle is not None and handle.id == ids["open"]
    handle.say("a quota per tenant instead")
    (hit,) = repo.search("quota").hits
    assert hit.state == "open" and hit.kind == "conversation"
    handle.write("budget.py", "x\n")
    handle.land()
    (hit,) = repo.search("quota").hits
    assert (hit.session, hit.state, hit.position) == (ids["open"], "landed", 7)
    assert repo.search("quota", state="open").hits == []


BAD_QUERIES = [
    "", "   ", '"unclosed', 'retry "backoff', 'a " b " c "', "*", "**", "*retry", "re*try", "r*",
    "x" * (MAX_QUERY + 1), " ".join(f"w{i}" for i in range(MAX_TERMS + 1)), "--- ... !!!", '""',
]


@pytest.mark.parametrize("text", BAD_QUERIES)
def test_bad_query_syntax_is_a_clear_error(text: str) -> None:
    with pytest.raises(BadQuery) as e:
        fts_expression(text)
    assert str(e.value) and "\n" not in str(e.value)


# FTS5 syntax a user may type (by accident or on purpose): raw, each is an FTS5 error (the first
# list) or another query than the words typed (the second); translated, each is quoted words only
FTS_ERRORS = ["retry AND", "OR backoff", "NOT retry", "AND", "^^retry", "(retry", "retry)", "retry:",
              "nocol : x", "a - b", "x-y", "a.b", "'quoted'", "{nocol}: retry"]
FTS_OTHER = ["NEAR(retry backoff)", "goal: retry", "{goal}: retry", "retry OR nothing", "retry NOT backoff",
             "^retry", "retry + backoff"]
SAFE = re.compile(r'("[\w ]+"\*?)( AND "[\w ]+"\*?)*')


@pytest.mark.parametrize("text", FTS_ERRORS + FTS_OTHER)
def test_fts_syntax_is_never_passed_through(text: str, tmp_path: Path) -> None:
    raw = sqlite3.connect(":memory:")
    raw.execute("create virtual table fts using fts5 (goal, conversation)")
    raw.execute("insert into fts values ('retry backoff', 'and or not near')")
    if text in FTS_ERRORS:
        with pytest.raises(sqlite3.OperationalError):  # what the raw text would do
            raw.execute("select * from fts where fts match ?", (text,)).fetchall()
    expr = fts_expression(text)
    assert SAFE.fullmatch(expr), expr
    raw.execute("select * from fts where fts match ?", (expr,)).fetchall()  # ours: always reads
    index = SearchIndex(tmp_path / "i.sqlite")
    try:
        index.query(Query(text))
    finally:
        index.close()


@contextlib.contextmanager
def index_of(path: Path, *repos: hif.Repository) -> Iterator[SearchIndex]:
    """An index file at ``path``, caught up with ``repos``."""
    index = SearchIndex(path)
    try:
        for r in repos:
            drive(index.refresh(r.repo))
        yield index
    finally:
        index.close()


def test_scope_is_applied_before_counting(tmp_path: Path) -> None:
    """A query confined to some repositories never counts, facets or shows the others."""
    with hif.Repository.init(tmp_path / "pub", name="team/open") as pub, \
            hif.Repository.init(tmp_path / "priv", name="team/closed") as priv:
        land(pub, "Public retry work")
        for i in range(3):
            land(priv, f"Secret retry plan {i}", says=("the hidden retry budget",), author="mallory")
        with index_of(tmp_path / "i.sqlite", pub, priv) as index:
            everything = index.query(Query("retry"))
            assert everything.total == 4
            confined = index.query(Query("retry", scope=[pub.repo.prefix]))
            assert confined.total == 1 and [h.repo for h in confined.hits] == ["team/open"]
            flat = json.dumps(confined.to_json())
            assert "closed" not in flat and "mallory" not in flat and "Secret" not in flat
            assert dict(confined.facets["repository"]) == {"team/open": 1}
            assert index.query(Query("hidden", scope=[pub.repo.prefix])).total == 0
            assert index.query(Query("retry", scope=[])).total == 0  # may read nothing: sees nothing


def _garble_header(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


def _garble_pages(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(8192))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(1000)


def _foreign(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("create table docs (x)")
    db.execute("insert into docs values (1)")
    db.commit()
    db.close()


@pytest.mark.parametrize("damage", [Path.unlink, _garble_header, _garble_pages, _truncate, _foreign],
                         ids=["deleted", "garbled-header", "garbled-pages", "truncated", "foreign"])
def test_damaged_or_deleted_index_is_rebuilt(corpus: tuple[hif.Repository, dict[str, str]], damage: object) -> None:
    repo, ids = corpus
    before = [h.session for h in repo.search("retry").hits]
    path = repo.root / INDEX
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    damage(path)  # type: ignore[operator]
    assert [h.session for h in repo.search("retry").hits] == before
    assert sessions(repo, "memcached", kinds=("rejected",)) == [ids["cache"]]
    db = sqlite3.connect(path)
    assert db.execute("pragma quick_check").fetchone() == ("ok",)
    db.close()


def test_index_deleted_under_an_open_handle_starts_anew(corpus: tuple[hif.Repository, dict[str, str]],
                                                       tmp_path: Path) -> None:
    repo, ids = corpus
    with index_of(tmp_path / "i.sqlite", repo) as index:
        assert index.query(Query("changelog")).total == 2
        (tmp_path / "i.sqlite").unlink()
        drive(index.refresh(repo.repo))  # notices the file is gone, starts anew, catches up
        assert (tmp_path / "i.sqlite").exists() and index.query(Query("changelog")).total == 2


def test_history_replaced_under_the_index_is_indexed_again(tmp_path: Path) -> None:
    """The index notes the tree at the position it reached; another history under the same name
    (a store replaced) is dropped and indexed from scratch, never mixed."""
    with hif.Repository.init(tmp_path / "one", name="team/x") as one:
        land(one, "Original alpha work", files={"a": "1\n"})
        land(one, "Original beta work", files={"b": "1\n"})
        with index_of(tmp_path / "i.sqlite", one) as index:
            assert index.query(Query("original")).total == 2
    with hif.Repository.init(tmp_path / "two", name="team/x") as two:
        land(two, "Replacement gamma work", files={"c": "1\n"})
        land(two, "Replacement delta work", files={"d": "1\n"})
        land(two, "Replacement epsilon work", files={"e": "1\n"})
        with index_of(tmp_path / "i.sqlite", two) as index:
            assert index.query(Query("original")).total == 0
            assert index.query(Query("replacement")).total == 3


def hif_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIF_AUTHOR": "ana", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "hif", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_search(corpus: tuple[hif.Repository, dict[str, str]]) -> None:
    repo, ids = corpus
    out = hif_cli(repo.root, "search", "sqlite", "--rejected")
    assert out.returncode == 0, out.stderr
    assert ids["uploader"] in out.stdout and ids["storage"] not in out.stdout
    assert "rejected" in out.stdout and "[sqlite]" in out.stdout
    doc = json.loads(hif_cli(repo.root, "search", "retr*", "--json", "-n", "2").stdout)
    assert doc["total"] == 4 and len(doc["results"]) == 2 and doc["next"] == 2
    assert all(r["repo"] == repo.name for r in doc["results"])
    for bad in ('"unclosed', "*", "re*try", "x" * (MAX_QUERY + 1)):
        out = hif_cli(repo.root, "search", bad)
        assert out.returncode == 1 and out.stderr.startswith("error: "), out
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    out = hif_cli(repo.root, "search", "retry", "--all")
    assert out.returncode == 1 and "not a clone of a forge repository" in out.stderr


def test_many_matches_rank_the_newest_the_caller_may_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the ranking window, the newest matches are ranked, counted among what the caller may
    read: other repositories' matches (newer, and more of them) never push the caller's out."""
    with hif.Repository.init(tmp_path / "pub", name="team/open") as pub, \
            hif.Repository.init(tmp_path / "priv", name="team/closed") as priv:
        old = [land(pub, f"Public retry {i}") for i in range(3)]
        for i in range(5):
            land(priv, f"Private retry {i}")
        with index_of(tmp_path / "i.sqlite", pub, priv) as index:
            monkeypatch.setattr("hif.search.RANK_WINDOW", 2)
            mine = index.query(Query("retry", scope=[pub.repo.prefix]))
            assert (mine.total, mine.capped) == (2, True)
            assert {h.session for h in mine.hits} == set(old[1:])  # the newest two of the caller's
            few = index.query(Query("public retry 0", scope=[pub.repo.prefix]))
            assert (few.total, few.capped, [h.session for h in few.hits]) == (1, False, old[:1])
