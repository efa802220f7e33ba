"""`make run`: a forge node on the embedded store with a demo repository and an admin account.

The first run builds ``demo-data/`` (a store with the repository ``acme/demo`` and a few landed
sessions, a site admin ``admin``) and prints the admin's password and an API token once; later runs
serve the same data. ``make clean`` does not touch it; delete ``demo-data/`` to start over.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from hif import Repository
from hif.store import open_store
from node.accounts import Accounts
from node.authdb import AuthDB
from node.config import Config
from node.server import run

DATA = Path("demo-data")
STORE = DATA / "store"
WORK = DATA / "work"
CACHE = DATA / "cache"


def build_repository() -> int:
    """Land a few sessions with the SDK straight into the node's store; returns the head."""
    if WORK.exists():
        shutil.rmtree(WORK)
    repo = Repository.init(WORK, store=str(STORE.absolute()), name="acme/demo")
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
    head = repo.head()
    repo.close()
    shutil.rmtree(WORK)  # the node serves the store; people clone from the node
    return head


async def create_admin() -> tuple[str, str]:
    store = open_store(str(STORE), create=True)
    try:
        accounts = Accounts(AuthDB(store, CACHE / "setup"))
        password = await accounts.create_user("admin", admin=True)
        _tid, token = await accounts.create_token("admin", scope="admin", name="make run")
        await accounts.create_org("acme", "admin")
        await accounts.register_repo("acme/demo", private=False, owner_user="admin",
                                     description="A demo repository made by make run")
        return password, token
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    config = Config.from_env(store=str(STORE), host=args.host, port=args.port, cache_dir=str(CACHE / "node"))
    if not STORE.exists():
        head = build_repository()
        password, token = asyncio.run(create_admin())
        print(f"""
Built demo-data/: repository acme/demo with {head} landed sessions, and a site admin.
These are shown once (delete demo-data/ to start over):

    user:     admin
    password: {password}
    token:    {token}

Try it from another terminal (the commands are in {Path('.venv/bin').absolute()}):

    export PATH={Path('.venv/bin').absolute()}:$PATH
    hif login {config.url} --token {token}
    hif clone {config.url}/acme/demo && cd demo
    hif log && hif show 1
    hif session start "Add a farewell"
    echo bye > bye.txt
    hif say "Which word?" --as agent
    hif decide "bye" --why "short" --alternative "goodbye"
    hif land
""", flush=True)
    else:
        print("Serving the existing demo-data/ (the admin token was printed on the first run;"
              " make another with: .venv/bin/micelio admin --store demo-data/store token create admin"
              " --scope admin)", flush=True)
    print(f"Open {config.url}/ in a browser (log in as admin); the API is at {config.url}/api/v1 "
          f"(docs/api.md), health at {config.url}/healthz", flush=True)
    run(config)


if __name__ == "__main__":
    main()
