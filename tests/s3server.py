"""Run moto's S3 server in a subprocess on loopback so the S3 store is tested over real HTTP.

The server is moto's own WSGI app and request handler (what ``python -m moto.server`` runs), with
one difference: requests are handled one at a time. moto checks ``If-None-Match``/``If-Match`` and
then writes in two steps without a lock, so under a threaded server two racing conditional writes
could both win — real S3 makes them atomic, and the race tests need that guarantee, not moto's gap.
Connections are still accepted concurrently, so the client's pool and concurrency are exercised.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

START_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server and wait (bounded) until it answers; return (process, endpoint URL)."""
    port = free_port()
    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        MOTO_PORT=str(port),
    )
    env.update(extra_env or {})
    # output goes to a file, not a pipe: an unread pipe fills up and blocks the server
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "127.0.0.1", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"moto server exited with {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    pass
                return proc, endpoint
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
    stop_s3_server(proc)
    raise RuntimeError(f"moto server did not answer on {endpoint} within {START_TIMEOUT:.0f}s")


def stop_s3_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server, killing it if it does not exit promptly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _serve(host: str, port: int) -> None:
    """Serve moto's S3 app with requests serialized (see the module docstring)."""
    import logging
    import signal
    import threading

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):  # type: ignore[no-untyped-def]
        with lock:
            return list(app(environ, start_response))

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
