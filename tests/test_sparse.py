"""Sparse clones (``hif clone --sparse DIR``) against a real forge: only the cone is fetched and
checked out, everything else stays readable on demand and cannot be changed from the clone."""

from __future__ import annotations

from pathlib import Path

import pytest
from forge import Forge
from test_remote import Hif, land, setup_repo

from hif.sparse import Cone, parse_cones


@pytest.fixture
def hif(tmp_path: Path) -> Hif:
    return Hif(tmp_path / "config")


def test_patterns() -> None:
    assert parse_cones(["src/app/", "src/app/x", "docs/**", "src/lib"]) == ["docs", "src/app", "src/lib"]
    cone = Cone(["src/app"])
    assert "README.md" in cone and "src/app/main.py" in cone and "src/app/a/b.py" in cone
    assert "src/lib/x.py" not in cone and "src/app.py" not in cone
    for bad in ("", "src/*.py", "../x", "/"):
        with pytest.raises(Exception, match="sparse|path|component|empty"):
            parse_cones([bad])


def test_sparse_clone_fetches_only_the_cone(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    url = setup_repo(hif, forge, tmp_path)
    full = tmp_path / "full"
    hif.run(tmp_path, "clone", url, str(full))
    files = {"README.md": "# api\n"}
    for d in ("app", "lib", "docs"):
        for i in range(30):
            files[f"{d}/sub{i % 3}/f{i}.txt"] = f"{d} {i}\n"
    land(hif, full, "Seed", files)
    whole = hif.js(tmp_path, "clone", url, str(tmp_path / "whole"))
    sparse_dir = tmp_path / "sparse"
    sparse = hif.js(tmp_path, "clone", url, str(sparse_dir), "--sparse", "app")
    assert sparse["sparse"] == ["app"]
    assert sparse["fetched_objects"] < whole["fetched_objects"] / 2, (sparse, whole)
    on_disk = sorted(str(p.relative_to(sparse_dir)) for p in sparse_dir.rglob("*")
                     if p.is_file() and ".hif" not in p.parts)
    assert on_disk == sorted(p for p in files if p == "README.md" or p.startswith("app/"))
    assert hif.js(sparse_dir, "status")["changes"] == []
    # the rest is still readable, fetched on first read
    assert hif.run(sparse_dir, "cat", "lib/sub1/f1.txt").stdout == "lib 1\n"
    assert len(hif.js(sparse_dir, "ls", "docs")["entries"]) == 3

    # a session inside the cone lands; the other directories are untouched on the forge
    res = land(hif, sparse_dir, "Touch the app", {"app/sub0/f0.txt": "changed\n", "app/new.txt": "new\n"})
    assert res["position"] == 2
    hif.run(full, "pull")
    assert (full / "app/sub0/f0.txt").read_text() == "changed\n"
    assert (full / "lib/sub1/f1.txt").read_text() == "lib 1\n"
    assert (full / "docs/sub2/f2.txt").read_text() == "docs 2\n"

    # changes elsewhere reach the sparse clone only inside its cone
    land(hif, full, "Both sides", {"app/sub1/f1.txt": "app again\n", "lib/sub1/f1.txt": "lib again\n"})
    hif.run(sparse_dir, "pull")
    assert (sparse_dir / "app/sub1/f1.txt").read_text() == "app again\n"
    assert not (sparse_dir / "lib").exists()

    # a file outside the cone cannot be changed from here: one clear line, nothing recorded
    hif.run(sparse_dir, "session", "start", "Outside")
    (sparse_dir / "lib").mkdir()
    (sparse_dir / "lib/sub1").mkdir()
    (sparse_dir / "lib/sub1/f1.txt").write_text("clobber\n")
    p = hif.run(sparse_dir, "land", ok=False)
    assert "outside the sparse checkout" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert hif.run(full, "cat", "lib/sub1/f1.txt").stdout == "lib again\n"
