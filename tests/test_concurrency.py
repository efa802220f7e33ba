"""Many OS processes landing on one repository at once, through the real ``hif`` CLI.

Each worker has its own working copy (``hif workspace add``) over one embedded store; landing is
coordinator-free, so the only thing keeping the mainline gap-free and every session landed once is the
put-if-absent of ``log/<position>``. These tests check exactly that from the outside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hif.landing import GROUP

pytestmark = pytest.mark.slow

HIF = str(Path(sys.executable).with_name("hif"))
if not os.path.exists(HIF):  # pragma: no cover - e.g. run from another environment
    HIF = shutil.which("hif") or HIF

WORKERS = 16
SESSIONS_PER_WORKER = 3


def env(author: str = "tester") -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "HIF_DEBUG"}
    e.update(HIF_AUTHOR=author, HIF_ROLE="agent")
    return e


def hif(cwd: Path, *args: str, check: bool = True, author: str = "tester") -> subprocess.CompletedProcess[str]:
    p = subprocess.run([HIF, *args], cwd=cwd, env=env(author), capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"hif {' '.join(args)} in {cwd} exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


def hif_json(cwd: Path, *args: str) -> Any:
    return json.loads(hif(cwd, *args, "--json").stdout)


def init_repo(tmp_path: Path) -> Path:
    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", "team/project")
    return main


def add_workspace(main: Path, where: Path) -> Path:
    hif(main, "workspace", "add", str(where))
    return where


def check_log(ws: Path, expected_sessions: list[str]) -> list[dict[str, Any]]:
    """The log is gap-free (1..N) and holds every expected session exactly once (group landing may
    put several sessions in one record)."""
    rows = hif_json(ws, "log")["landings"]
    positions = sorted({r["position"] for r in rows})
    assert positions == list(range(1, len(positions) + 1)), positions
    counts = Counter(r["session"] for r in rows)
    assert all(c == 1 for c in counts.values()), [s for s, c in counts.items() if c > 1]
    assert set(counts) == set(expected_sessions)
    return rows


def cat_all(ws: Path, paths: list[str]) -> dict[str, str]:
    def one(path: str) -> tuple[str, str]:
        return path, hif(ws, "cat", path).stdout

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, paths))


WORKER = textwrap.dedent(
    """
    import json, subprocess, sys
    hif, ws, idx, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = []
    for j in range(count):
        def run(*args):
            p = subprocess.run([hif, *args, "--json"], cwd=ws, capture_output=True, text=True)
            if p.returncode != 0:
                print(json.dumps({"error": [list(args), p.returncode, p.stdout, p.stderr]}))
                sys.exit(1)
            return json.loads(p.stdout)
        sid = run("session", "start", f"worker {idx} change {j}")["session"]
        path = f"w{idx:02d}/f{j}.txt"
        import os
        os.makedirs(f"{ws}/w{idx:02d}", exist_ok=True)
        with open(f"{ws}/{path}", "w") as f:
            f.write(f"worker {idx} session {j}\\n")
        res = run("land")
        out.append({"session": sid, "landed": res["session"], "position": res["position"], "path": path,
                    "already": res["already_landed"]})
    print(json.dumps(out))
    """
)


def test_many_processes_land_distinct_files(tmp_path: Path) -> None:
    main = init_repo(tmp_path)
    workspaces = [add_workspace(main, tmp_path / f"ws{i:02d}") for i in range(WORKERS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, HIF, str(ws), str(i), str(SESSIONS_PER_WORKER)],
            env=env(f"worker-{i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, ws in enumerate(workspaces)
    ]
    results: list[dict[str, Any]] = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"worker {i}: {out}{err}"
        results += json.loads(out)
    total = WORKERS * SESSIONS_PER_WORKER
    assert len(results) == total
    assert all(r["session"] == r["landed"] and not r["already"] for r in results)
    by_position = Counter(r["position"] for r in results)
    assert all(n == 1 or n <= GROUP for n in by_position.values())

    # a fresh working copy sees the whole history and the head tree
    fresh = add_workspace(main, tmp_path / "fresh")
    rows = check_log(fresh, [r["session"] for r in results])
    by_session = {r["session"]: r for r in rows}
    for r in results:
        assert by_session[r["session"]]["position"] == r["position"]
        assert by_session[r["session"]]["files"] == [r["path"]]
    listed = {e["path"]: e for e in hif_json(fresh, "ls", "-r")["entries"]}
    expected = {r["path"]: f"worker {int(r['path'][1:3])} session {r['path'][-5]}\n" for r in results}
    assert set(listed) == set(expected)
    assert cat_all(fresh, sorted(expected)) == expected
    for path, content in expected.items():  # the checkout on disk agrees
        assert (fresh / path).read_text() == content
    # and a worker's own working copy, pulled, agrees too
    hif(workspaces[0], "pull")
    assert {p: (workspaces[0] / p).read_text() for p in expected} == expected


def _prepare(main: Path, tmp_path: Path, n: int, edit: Any) -> list[tuple[Path, str]]:
    """n working copies at the head, each with an open session and its edit of shared.txt made."""
    out = []
    for i in range(n):
        ws = add_workspace(main, tmp_path / f"ws{i}")
        sid = hif_json(ws, "session", "start", f"edit {i}")["session"]
        path = ws / "shared.txt"
        path.write_text(edit(i, path.read_text()))
        out.append((ws, sid))
    return out


def _land_all(prepared: list[tuple[Path, str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every ``hif land`` at once, then collect them."""
    procs = [
        subprocess.Popen([HIF, "land", "--json"], cwd=ws, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for ws, _ in prepared
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess([HIF, "land"], p.returncode, out, err))
    return done


def _shared_lines() -> list[str]:
    return [f"line {k:02d} of the shared file\n" for k in range(40)]


def _seed_shared(main: Path) -> str:
    sid = hif_json(main, "session", "start", "seed the shared file")["session"]
    (main / "shared.txt").write_text("".join(_shared_lines()))
    assert hif_json(main, "land")["position"] == 1
    return sid


def test_concurrent_edits_of_distinct_lines_all_land(tmp_path: Path) -> None:
    main = init_repo(tmp_path)
    seed = _seed_shared(main)
    n = 8

    def edit(i: int, text: str) -> str:
        lines = text.splitlines(keepends=True)
        lines[5 * i + 2] = f"line {5 * i + 2:02d} changed by worker {i}\n"
        return "".join(lines)

    prepared = _prepare(main, tmp_path, n, edit)
    results = _land_all(prepared)
    for r in results:
        assert r.returncode == 0, r.stdout + r.stderr
    docs = [json.loads(r.stdout) for r in results]
    assert sorted(d["position"] for d in docs) == list(range(2, n + 2))
    assert any(d["merged"] == ["shared.txt"] for d in docs), "later landings 3-way merge"

    fresh = add_workspace(main, tmp_path / "fresh")
    check_log(fresh, [seed] + [sid for _, sid in prepared])
    want = _shared_lines()
    for i in range(n):
        want[5 * i + 2] = f"line {5 * i + 2:02d} changed by worker {i}\n"
    assert hif(fresh, "cat", "shared.txt").stdout == "".join(want)
    assert (fresh / "shared.txt").read_text() == "".join(want)


def test_concurrent_edits_of_the_same_line_one_lands(tmp_path: Path) -> None:
    main = init_repo(tmp_path)
    seed = _seed_shared(main)
    n = 8

    def edit(i: int, text: str) -> str:
        lines = text.splitlines(keepends=True)
        lines[20] = f"line 20 as worker {i} wants it\n"
        return "".join(lines)

    prepared = _prepare(main, tmp_path, n, edit)
    results = _land_all(prepared)
    codes = Counter(r.returncode for r in results)
    assert codes == Counter({0: 1, 3: n - 1}), [(r.returncode, r.stdout, r.stderr) for r in results]
    winner = next(i for i, r in enumerate(results) if r.returncode == 0)
    assert json.loads(results[winner].stdout)["position"] == 2
    for r in results:
        if r.returncode == 3:  # --json reports the conflict as one document
            doc = json.loads(r.stdout)["error"]
            assert doc["type"] == "ConflictError"
            assert [c["path"] for c in doc["conflicts"]] == ["shared.txt"]
            assert doc["conflicts"][0]["sessions"] == [{"position": 2, "session": prepared[winner][1]}]
    loser = next(i for i, r in enumerate(results) if r.returncode == 3)
    again = hif(prepared[loser][0], "land", check=False)  # retrying without a sync still conflicts
    assert again.returncode == 3 and "shared.txt" in again.stderr

    fresh = add_workspace(main, tmp_path / "fresh")
    rows = check_log(fresh, [seed, prepared[winner][1]])
    assert len(rows) == 2
    want = _shared_lines()
    want[20] = f"line 20 as worker {winner} wants it\n"
    assert hif(fresh, "cat", "shared.txt").stdout == "".join(want)
    # the losers' sessions are still open (nothing lost) and listed as such
    open_ids = {s["id"] for s in hif_json(fresh, "session", "list")["sessions"]}
    assert open_ids == {sid for i, (_, sid) in enumerate(prepared) if i != winner}
