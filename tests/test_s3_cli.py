"""The hif CLI on the S3 store: `hif init --store s3://bucket/prefix` against a real S3 API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

HIF = [sys.executable, "-m", "hif.cli"]


def hif(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HIF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_walkthrough_on_s3(tmp_path: Path, s3_server: str) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "HIF_AUTHOR": "ana"}
    bucket = f"hif-cli-{uuid.uuid4().hex[:12]}"
    r = hif(tmp_path, env, "init", "demo", "--store", f"s3://{bucket}/team", "--name", "acme/demo")
    assert r.returncode == 0, r.stderr
    demo = tmp_path / "demo"
    assert not (demo / ".hif" / "store").exists()  # nothing stored locally
    assert hif(demo, env, "session", "start", "Add a greeting").returncode == 0
    (demo / "hello.txt").write_text("hello\n")
    assert hif(demo, env, "say", "Casual", "--as", "human").returncode == 0
    r = hif(demo, env, "land", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["position"] == 1

    # a second working copy over the same bucket sees the landing and adds its own
    r = hif(demo, env, "workspace", "add", str(tmp_path / "second"))
    assert r.returncode == 0, r.stderr
    second = tmp_path / "second"
    assert (second / "hello.txt").read_text() == "hello\n"
    assert hif(second, env, "session", "start", "Add a farewell").returncode == 0
    (second / "bye.txt").write_text("bye\n")
    assert hif(second, env, "land").returncode == 0
    r = hif(demo, env, "log", "--json")
    goals = [x["goal"] for x in json.loads(r.stdout)["landings"]]
    assert goals == ["Add a farewell", "Add a greeting"]


def test_missing_bucket_is_one_clear_line(tmp_path: Path, s3_server: str) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    demo = tmp_path / "demo"
    (demo / ".hif").mkdir(parents=True)
    (demo / ".hif" / "config.json").write_text(json.dumps({"store": "s3://no-such-bucket-xyz/p", "repo": "a/b"}))
    r = hif(demo, env, "log")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and "no-such-bucket-xyz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
