"""A small Dockerfile linter for `make test` (hadolint is not on PyPI and Docker cannot run here).

Checks what matters for Micelio's image: pinned base images (a tag with a version, never `latest`
or none), a non-root `USER` before `ENTRYPOINT`/`CMD`, a `HEALTHCHECK`, no `ADD` of URLs, and
`apt-get install` with `--no-install-recommends` and the lists cleaned in the same layer.
Usage: python scripts/lint_dockerfile.py [Dockerfile]; exit 1 and one line per problem.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[int, str, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if not buf:
            start = n
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    if buf:
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def lint(text: str) -> list[str]:
    problems: list[str] = []
    ins = instructions(text)
    stages: set[str] = set()
    user: str | None = None
    user_line = 0
    for n, op, args in ins:
        if op == "FROM":
            parts = args.split()
            image = next((p for p in parts if not p.startswith("--")), "")
            if len(parts) >= 3 and parts[-2].upper() == "AS":
                stages.add(parts[-1].lower())
            if image.lower() in stages or image == "scratch":
                continue
            name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if "@sha256:" in image:
                continue
            if not tag or tag == "latest" or not re.search(r"\d", tag):
                problems.append(f"line {n}: base image {image!r} is not pinned to a version tag")
        elif op == "USER":
            user, user_line = args.split(":")[0], n
        elif op == "ADD" and re.search(r"https?://", args):
            problems.append(f"line {n}: ADD of a URL (use RUN with a checked download)")
        elif op == "RUN" and re.search(r"apt-get\s+(-\S+\s+)*install", args):
            if "--no-install-recommends" not in args:
                problems.append(f"line {n}: apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists" not in args:
                problems.append(f"line {n}: apt-get install without removing /var/lib/apt/lists")
        elif op in ("ENTRYPOINT", "CMD") and user is None:
            problems.append(f"line {n}: {op} before any USER (the container would run as root)")
    if user is not None and user in ("root", "0"):
        problems.append(f"line {user_line}: the final USER is root")
    if user is None:
        problems.append("no USER: the container runs as root")
    if not any(op == "HEALTHCHECK" and not args.upper().startswith("NONE") for _, op, args in ins):
        problems.append("no HEALTHCHECK")
    if not any(op == "FROM" for _, op, _ in ins):
        problems.append("no FROM")
    return problems


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "Dockerfile")
    problems = lint(path.read_text())
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        print(f"{path}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
