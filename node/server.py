"""Running the node under hypercorn (``micelio serve``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HyperConfig

from node.composition import configure_logging, create_app
from node.config import Config


def hypercorn_config(config: Config) -> HyperConfig:
    hc = HyperConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.accesslog = None  # the app writes its own structured access log, without query strings
    hc.errorlog = "-"
    hc.graceful_timeout = 5
    return hc


def loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``loop = auto``, the default) or asked for: the
    node's per-request and per-store-call work is mostly event-loop hops, which uvloop makes cheaper
    (bench/README.md, issue 20 target 3); ``asyncio``: the standard loop."""
    if config.loop == "asyncio":
        return None
    try:
        import uvloop  # optional: imported only when serving, and the plain loop works without it
    except ImportError:
        if config.loop == "uvloop":
            raise SystemExit("MICELIO_LOOP=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(config: Config) -> None:
    """Serve until SIGINT/SIGTERM; the store is opened inside the server's event loop."""
    configure_logging()
    app = create_app(config)
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"micelio node serving {config.store} at {config.url}", flush=True)
        await serve(app, hypercorn_config(config), shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    with asyncio.Runner(loop_factory=loop_factory(config)) as runner:
        runner.run(main())
