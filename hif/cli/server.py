"""``hif server status|start|stop``: the warm command server (:mod:`hif.cli.warm`) seen and
handled by hand. Nothing needs them: a server starts on demand and exits when idle."""

from __future__ import annotations

import os
import time

from hif.cli import warm
from hif.cli.app import cli
from hif.cli.output import command, emit
from hif.errors import HifError, ServerRefused

START_WAIT = 15.0  # seconds ``hif server start`` waits for a new server to answer


@cli.group()
def server() -> None:
    """The warm command server that runs hif commands without a cold start."""


def _info(dfd: int, name: str) -> dict[str, object]:
    """What the server of key ``name`` says of itself, or why it does not answer."""
    doc: dict[str, object] = {"key": name}
    try:
        for part in warm.ask(dfd, name, "ping").split():
            k, _, v = part.partition("=")
            doc[k] = int(v) if v.isdigit() else v
        doc["state"] = "running"
    except ServerRefused as e:
        doc.update(state="refused", reason=str(e))
    except OSError as e:
        doc.update(state="not running", reason=e.strerror or str(e))
    return doc


def _open() -> int:
    try:
        return warm.open_directory(create=False)
    except ServerRefused as e:
        raise HifError(f"the warm server cannot be used: {e}") from None


@command(server, "status")
def status(as_json: bool) -> None:
    """Whether a server runs hif commands here, and the servers of this user."""
    on = warm.enabled()
    doc: dict[str, object] = {"directory": warm.directory(), "enabled": on, "servers": []}
    lines = [f"directory {warm.directory()}"]
    if not on:
        lines.append(f"off: {warm.OFF} is set (commands run without a server)")
    try:
        dfd = warm.open_directory(create=False)
    except ServerRefused as e:
        doc["refused"] = str(e)
        lines.append(f"refused: {e} (commands run without a server)")
    else:
        try:
            current = warm.key()
            doc["key"] = current
            for name in warm.servers(dfd):
                info = _info(dfd, name)
                info["current"] = name == current
                doc["servers"].append(info)  # type: ignore[attr-defined]
                which = "this hif's" if name == current else "another hif's (old code: it exits soon)"
                if info["state"] == "running":
                    lines.append(f"server {info['pid']}: {which}, up {info['up']} s, {info['served']} "
                                 f"commands, {info['running']} running, exits after {info['idle']} s idle")
                else:
                    lines.append(f"server {name[:12]}: {info['state']} ({info['reason']})")
        finally:
            os.close(dfd)
        if not doc["servers"] and on:
            lines.append("no server running: the next hif command starts one")
    emit(as_json, doc, "\n".join(lines))


@command(server, "start")
def start(as_json: bool) -> None:
    """Start this hif's server now (commands start it on demand) and wait until it answers."""
    if not warm.enabled():
        raise HifError(f"the warm server is off: {warm.OFF} is set")
    dfd = _open()
    try:
        name = warm.key()
        deadline = time.monotonic() + START_WAIT
        started = False
        while True:
            info = _info(dfd, name)
            if info["state"] == "running":
                break
            if info["state"] == "refused" or time.monotonic() > deadline:
                raise HifError(f"the server did not start: {info.get('reason')}")
            if not started:
                warm.spawn(dfd, name)
                started = True
            time.sleep(0.05)
    finally:
        os.close(dfd)
    emit(as_json, info, f"server {info['pid']} running ({warm.directory()})")


@command(server, "stop")
def stop(as_json: bool) -> None:
    """Stop every server of this user (each finishes the commands it is running first)."""
    dfd = _open()
    stopped = []
    try:
        for name in warm.servers(dfd):
            try:
                warm.ask(dfd, name, "stop")
                stopped.append(name)
            except (ServerRefused, OSError):
                continue
    finally:
        os.close(dfd)
    emit(as_json, {"stopped": stopped}, f"stopped {len(stopped)} server{'s' * (len(stopped) != 1)}")
