"""The Python SDK (``hif.Repository``) in-process, as an agent's script would use it."""

from __future__ import annotations

from pathlib import Path

import pytest

import hif
from hif.errors import InvalidInput, InvalidPath, NoOpenSession, NotARepository


@pytest.fixture(autouse=True)
def author(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIF_AUTHOR", "tester")
    monkeypatch.delenv("HIF_ROLE", raising=False)


def test_session_lands_on_exit(tmp_path: Path) -> None:
    with hif.Repository.init(tmp_path / "r") as repo:
        assert repo.position == 0 and repo.log() == []
        with repo.start_session("Add a greeting") as s:
            s.say("Formal or casual?", role="agent")
            s.say("Casual")
            s.decide("Casual greeting", why="the human asked for it", alternatives=["formal greeting"])
            s.write("a.txt", "x")
            s.write("sub/b.bin", b"\x00\x01")
        assert s.result is not None and s.result.position == 1
        assert repo.position == 1 and repo.session_id is None
        assert (tmp_path / "r" / "a.txt").read_text() == "x"

        (rec,) = repo.log()
        assert rec.position == 1
        (landed,) = rec.sessions
        assert (landed.session, landed.goal, landed.author) == (s.id, "Add a greeting", "tester")
        assert sorted(landed.changes) == ["a.txt", "sub/b.bin"]
        assert repo.cat("a.txt") == b"x" and repo.cat("sub/b.bin", at=1) == b"\x00\x01"

        session, rec2 = repo.resolve_ref(s.id)
        assert rec2 is not None and rec2.position == 1 and session.state == "landed"
        assert [(e["role"], e["text"]) for e in session.of_type("say")] == [("agent", "Formal or casual?"),
                                                                           ("human", "Casual")]
        (d,) = session.of_type("decide")
        assert (d["why"], d["alternatives"]) == ("the human asked for it", ["formal greeting"])


def test_exception_leaves_session_open(tmp_path: Path) -> None:
    with hif.Repository.init(tmp_path / "r") as repo:
        with pytest.raises(RuntimeError, match="boom"), repo.start_session("half done") as s:
            s.write("a.txt", "partial\n")
            s.checkpoint("first try")
            raise RuntimeError("boom")
        assert repo.log() == [] and repo.position == 0
        assert repo.session_id == s.id
        assert [x.id for x in repo.sessions()] == [s.id]
        assert (tmp_path / "r" / "a.txt").read_text() == "partial\n"
        # nothing is lost: the session can be picked up again and landed
        handle = repo.session()
        assert handle is not None and handle.id == s.id
        handle.write("a.txt", "done\n")
        assert handle.land().position == 1
        assert repo.cat("a.txt") == b"done\n"
        (cp,) = repo.load_session(s.id).of_type("checkpoint")
        assert cp["note"] == "first try"


def test_abandon_and_errors(tmp_path: Path) -> None:
    with hif.Repository.init(tmp_path / "r") as repo:
        with pytest.raises(NoOpenSession):
            repo.say("nobody listens")
        with pytest.raises(InvalidInput):
            repo.start_session("  ")
        s = repo.start_session("try")
        with pytest.raises(InvalidInput, match="already open"):
            repo.start_session("another")
        with pytest.raises(InvalidPath):
            s.write("../escape.txt", "no")
        assert not (tmp_path / "escape.txt").exists()
        s.write("a.txt", "x")
        abandoned = repo.abandon("changed my mind")
        assert abandoned.state == "abandoned" and repo.session_id is None
        assert not (tmp_path / "r" / "a.txt").exists()
        assert repo.status().changes == [] and repo.log() == []
    with pytest.raises(NotARepository):
        hif.Repository.open(tmp_path)
    with pytest.raises(InvalidInput, match="already"):
        hif.Repository.init(tmp_path / "r")


def test_workspaces_and_merge(tmp_path: Path) -> None:
    with hif.Repository.init(tmp_path / "r") as repo:
        with repo.start_session("base") as s:
            s.write("f.txt", "one\ntwo\nthree\nfour\nfive\n")
        with repo.add_workspace(tmp_path / "w") as other:
            assert other.position == 1
            assert (tmp_path / "w" / "f.txt").read_text() == "one\ntwo\nthree\nfour\nfive\n"
            with other.start_session("top") as s2:
                s2.write("f.txt", "ONE\ntwo\nthree\nfour\nfive\n")
            with repo.start_session("bottom") as s3:
                s3.write("f.txt", "one\ntwo\nthree\nfour\nFIVE\n")
            assert s3.result is not None and s3.result.position == 3 and s3.result.merged == ["f.txt"]
            assert (tmp_path / "r" / "f.txt").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"
            assert other.pull() == ["f.txt"]
            assert [r.position for r in other.log(limit=2)] == [3, 2]
            blame = other.blame("f.txt")
            assert [(b.text, b.goal) for b in blame] == [("ONE", "top"), ("two", "base"), ("three", "base"),
                                                         ("four", "base"), ("FIVE", "bottom")]


def test_blame_keeps_owner_of_line_that_gains_a_newline(tmp_path: Path) -> None:
    with hif.Repository.init(tmp_path / "r") as repo:
        with repo.start_session("first") as s:
            s.write("f.txt", "one\ntwo")  # no final newline
        with repo.start_session("second") as s:
            s.write("f.txt", "one\ntwo\nthree\n")
        assert [(b.text, b.goal) for b in repo.blame("f.txt")] == [
            ("one", "first"), ("two", "first"), ("three", "second")]
