"""Node configuration: flags win over ``MICELIO_*`` environment variables, which win over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import InvalidInput

DEFAULT_STORE = "./data"


@dataclass
class Config:
    """Everything a node needs to start; replicas of one node share ``store`` and nothing else."""

    store: str = DEFAULT_STORE
    host: str = "127.0.0.1"
    port: int = 8000
    # Where this replica keeps its local copy of the auth database (a cache: safe to delete).
    cache_dir: Path = field(default_factory=lambda: Path(".micelio-cache"))
    # URL the node is reached at (links, federation); defaults to http://host:port.
    public_url: str | None = None
    # How stale a replica's copy of the auth database may be before it checks the store again.
    auth_max_age: float = 1.0
    access_log: bool = True
    workers: int = 1
    # Reverse proxies whose X-Forwarded-For is believed (networks, e.g. "10.0.0.0/8 ::1"); empty: the
    # TCP peer is the client (see node/ratelimit.py client_address).
    trusted_proxies: str = ""
    # Seconds between the search index's catch-ups of every repository and mirror (node/search.py);
    # 0: no background catch-up, each query catches up the repositories it covers first.
    search_poll: float = 0.5
    # The event loop: auto (uvloop when installed, else asyncio's), uvloop or asyncio (node/server.py).
    loop: str = "auto"
    # Bytes the cached results of heavy work (blame, highlighting; node/heavy.py) may take in
    # cache_dir, all kinds together; past it the entries used longest ago are dropped.
    results_max: int = 1 << 30

    @property
    def url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        """Defaults, then the environment, then explicit (non-None) overrides such as CLI flags."""
        env = os.environ
        cfg = cls()
        if "MICELIO_STORE" in env:
            cfg.store = env["MICELIO_STORE"]
        if "MICELIO_HOST" in env:
            cfg.host = env["MICELIO_HOST"]
        if "MICELIO_PORT" in env:
            cfg.port = int(env["MICELIO_PORT"])
        if "MICELIO_CACHE_DIR" in env:
            cfg.cache_dir = Path(env["MICELIO_CACHE_DIR"])
        if "MICELIO_PUBLIC_URL" in env:
            cfg.public_url = env["MICELIO_PUBLIC_URL"]
        if "MICELIO_AUTH_MAX_AGE" in env:
            cfg.auth_max_age = float(env["MICELIO_AUTH_MAX_AGE"])
        if "MICELIO_SEARCH_POLL" in env:
            cfg.search_poll = float(env["MICELIO_SEARCH_POLL"])
        if "MICELIO_LOOP" in env:
            cfg.loop = env["MICELIO_LOOP"]
        if cfg.loop not in ("auto", "uvloop", "asyncio"):
            raise InvalidInput(f"MICELIO_LOOP must be auto, uvloop or asyncio, not {cfg.loop!r}")
        if "MICELIO_RESULTS_MAX" in env:
            cfg.results_max = int(env["MICELIO_RESULTS_MAX"])
        if "MICELIO_TRUSTED_PROXIES" in env:
            cfg.trusted_proxies = env["MICELIO_TRUSTED_PROXIES"]
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, Path(value) if key == "cache_dir" else value)
        return cfg
