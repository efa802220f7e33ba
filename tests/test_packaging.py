"""The Dockerfile linter `make test` runs (scripts/lint_dockerfile.py), on the real Dockerfile and
on bad ones; and flake.nix's shape where Nix cannot run."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
