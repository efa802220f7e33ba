"""`make run`: build a demo repository with a few landed sessions and print how to use hif.

The forge node (`micelio serve`) is not built yet; until it is, this prepares a local repository on
the embedded store so that the walkthrough in the README can be tried at once.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from hif import Repository

DEMO = Path("demo-data/demo")


def build(root: Path) -> Repository:
    if root.exists():
        shutil.rmtree(root)
    repo = Repository.init(root, name="acme/demo")
    with repo.start_session("Add a greeting", author="ana", role="human") as s:
        s.say("Should the greeting be formal or casual?", role="agent", author="claude")
        s.say("Casual, please.", role="human", author="ana")
        s.write("hello.txt", "hello\n")
        s.decide("Casual greeting", why="the human asked for it", alternatives=["formal greeting"],
                 role="agent", author="claude")
    with repo.start_session("Explain the project", author="claude", role="agent") as s:
        s.write("README.md", "# demo\n\nA repository made by `make run`.\n")
        s.checkpoint("first draft")
        s.write("README.md", "# demo\n\nA repository made by `make run`, to try hif.\n")
        s.decide("Keep the README short", why="the demo should be read in seconds", role="agent",
                 author="claude")
    return repo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.parse_args()
    repo = build(DEMO)
    head = repo.head()
    repo.close()
    venv_bin = Path(".venv/bin").absolute()
    print(f"""
A demo repository with {head} landed sessions is ready in {DEMO}/

Try it (the hif command is in {venv_bin}):

    export PATH={venv_bin}:$PATH
    cd {DEMO}
    hif log
    hif show 1
    hif session start "Add a farewell"
    echo bye > bye.txt
    hif say "Which word?" --as agent
    hif decide "bye" --why "short" --alternative "goodbye"
    hif status
    hif land

The forge node (micelio serve, the web UI) is not part of this build yet.
""")


if __name__ == "__main__":
    main()
