"""The Dockerfile linter `make test` runs (scripts/lint_dockerfile.py), on the real Dockerfile and
on bad ones; what the image promises (its environment, entry point and healthcheck) run here without
Docker; and flake.nix's shape where Nix cannot run, with its dependencies kept equal to
pyproject.toml's."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from s3server import free_port

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
spec = importlib.util.spec_from_file_location("lint_dockerfile", ROOT / "scripts" / "lint_dockerfile.py")
assert spec is not None and spec.loader is not None
lint_dockerfile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lint_dockerfile)
lint = lint_dockerfile.lint

GOOD = """FROM python:3.11.11-slim AS build
RUN apt-get update \\
    && apt-get install -y --no-install-recommends gcc \\
    && rm -rf /var/lib/apt/lists/*
FROM python:3.11.11-slim
COPY --from=build /x /x
USER app
HEALTHCHECK CMD ["true"]
ENTRYPOINT ["micelio", "serve"]
"""


def test_the_dockerfile_passes() -> None:
    assert lint((ROOT / "Dockerfile").read_text()) == []
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["micelio", "serve"]' in text and "EXPOSE 8000" in text and "/healthz" in text


def test_a_good_dockerfile_passes() -> None:
    assert lint(GOOD) == []


@pytest.mark.parametrize(("change", "problem"), [
    (("python:3.11.11-slim AS build", "python AS build"), "not pinned"),
    (("FROM python:3.11.11-slim\n", "FROM python:latest\n"), "not pinned"),
    (("USER app\n", ""), "no USER"),
    (("USER app\n", "USER root\n"), "final USER is root"),
    (('HEALTHCHECK CMD ["true"]\n', ""), "no HEALTHCHECK"),
    (("COPY --from=build /x /x", "ADD https://example.com/x.tgz /x"), "ADD of a URL"),
    (("--no-install-recommends ", ""), "--no-install-recommends"),
    (("    && rm -rf /var/lib/apt/lists/*\n", "    && true\n"), "/var/lib/apt/lists"),
])
def test_bad_dockerfiles_are_refused(change: tuple[str, str], problem: str) -> None:
    bad = GOOD.replace(*change)
    assert bad != GOOD
    assert any(problem in p for p in lint(bad)), lint(bad)


def test_entrypoint_before_user_is_refused() -> None:
    bad = GOOD.replace("USER app\n", "").replace('ENTRYPOINT ["micelio", "serve"]\n',
                                                 'ENTRYPOINT ["micelio", "serve"]\nUSER app\n')
    assert any("before any USER" in p for p in lint(bad))


def test_flake_declares_packages_and_a_dev_shell() -> None:
    text = (ROOT / "flake.nix").read_text()
    for part in ("devShells.default", "packages", "default = micelio", "hif = micelio",
                 "buildPythonApplication", "python311"):
        assert part in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")
    if shutil.which("nix-instantiate"):  # where Nix exists, it must parse
        subprocess.run(["nix-instantiate", "--parse", str(ROOT / "flake.nix")], check=True,
                       capture_output=True)


def _name(requirement: str) -> str:
    """A distribution's normalised name (PEP 503), as nixpkgs' attribute names mostly spell it."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0]).lower()


def test_flake_packages_what_pyproject_depends_on() -> None:
    text = (ROOT / "flake.nix").read_text()
    m = re.search(r"runtimeDeps = with py; \[(.*?)\];", text, re.S)
    assert m is not None, "flake.nix lists runtimeDeps"
    in_flake = {_name(x) for x in m.group(1).split()}
    assert in_flake == {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"hif", "micelio"}
    for cmd in scripts:  # the apps run the commands pyproject installs
        assert f'program = "${{micelio}}/bin/{cmd}"' in text
    assert "python.withPackages (ps: runtimeDeps" in text  # the dev shell has them too


def _final_stage(text: str) -> list[tuple[int, str, str]]:
    ins = lint_dockerfile.instructions(text)
    last = max(i for i, (_, op, _) in enumerate(ins) if op == "FROM")
    return ins[last:]


def test_the_image_copies_every_package() -> None:
    copied = {src for _, op, a in lint_dockerfile.instructions((ROOT / "Dockerfile").read_text())
              if op == "COPY" and not a.startswith("--from") for src in a.split()[:-1]}
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages and packages | {"pyproject.toml", "README.md"} <= copied, (packages, copied)


def test_the_images_entrypoint_and_healthcheck_work_together(tmp_path: Path) -> None:
    """The final stage's ENV, ENTRYPOINT and HEALTHCHECK, run here as the container would run them
    (the store and cache moved into a temporary directory and the address kept on loopback): the
    node serves with its store and port from the environment, and the healthcheck passes while it
    runs and fails once it is gone."""
    stage = _final_stage((ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for _, op, args in stage:
        if op == "ENV":
            for pair in shlex.split(args):
                k, _, v = pair.partition("=")
                env[k] = v
    assert {"MICELIO_STORE", "MICELIO_PORT", "MICELIO_HOST", "MICELIO_CACHE_DIR"} <= set(env)
    entry = json.loads(next(a for _, op, a in stage if op == "ENTRYPOINT"))
    health = next(a for _, op, a in stage if op == "HEALTHCHECK")
    probe = json.loads(health[health.index("CMD") + 3:].strip())
    assert entry[0] == "micelio" and probe[0] == "python"
    port = free_port()
    env.pop("PATH")
    env.update({"MICELIO_STORE": str(tmp_path / "data" / "store"), "MICELIO_CACHE_DIR": str(tmp_path / "cache"),
                "MICELIO_HOST": "127.0.0.1", "MICELIO_PORT": str(port)})
    run_env = {**os.environ, **env}
    bin_dir = Path(sys.executable).parent
    node = subprocess.Popen([str(bin_dir / entry[0]), *entry[1:]], cwd=tmp_path, env=run_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    check = [sys.executable, *probe[1:]]
    try:
        deadline = time.monotonic() + 30
        while True:
            ok = subprocess.run(check, env=run_env, capture_output=True, timeout=10).returncode == 0
            if ok or time.monotonic() > deadline or node.poll() is not None:
                break
            time.sleep(0.2)
        assert ok, node.stderr.read().decode() if node.poll() is not None else "healthcheck never passed"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert (tmp_path / "data" / "store").is_dir()  # the store the environment named
    finally:
        node.terminate()
        node.wait(timeout=30)
        assert node.stderr is not None
        node.stderr.close()
    assert subprocess.run(check, env=run_env, capture_output=True, timeout=10).returncode != 0
