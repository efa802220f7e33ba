"""Downloading a position as a ``.zip`` or ``.tar.gz``, streamed.

The tree is walked one directory at a time (``hif.tree.walk``) and each file is written to the
archive and sent before the next one is read, so memory holds one batch of files (at most
:data:`BATCH_BYTES`, or one file bigger than that), whatever the size of the repository; the cost
grows with the archive. Compression runs in a worker thread: a big archive does not stall the pages
other people are loading.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
import zipfile
from collections.abc import AsyncIterator
from urllib.parse import quote

from quart import Response

from hif.errors import NotFound
from hif.objects import EXEC, LINK, Entry
from hif.tree import walk
from ui.web import RepoView, bp, mirrored, open_repo

FORMATS = {"zip": "application/zip", "tar.gz": "application/gzip"}
BATCH_BYTES = 4 << 20  # file bytes gathered before one compression step in a worker thread


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken out as they come (zipfile and tarfile
    both write to unseekable streams: zip with data descriptors, tar in stream mode)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def _mode(entry: Entry) -> int:
    return 0o755 if entry.kind == EXEC else 0o644


class _Writer:
    """One archive being written: ``add`` files, then ``close``; ``sink`` holds what is ready."""

    def __init__(self, fmt: str, mtime: float) -> None:
        self.sink = _Sink()
        self.mtime = mtime
        self.zip: zipfile.ZipFile | None = None
        self.tar: tarfile.TarFile | None = None
        if fmt == "zip":
            self.zip = zipfile.ZipFile(self.sink, "w", compression=zipfile.ZIP_DEFLATED)  # type: ignore[arg-type]
        else:
            self.tar = tarfile.open(fileobj=self.sink, mode="w|gz", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]  # noqa: SIM115 - close() ends it

    def add(self, batch: list[tuple[str, Entry, bytes]]) -> None:
        for path, entry, data in batch:
            if self.zip is not None:
                info = zipfile.ZipInfo(path, date_time=time.gmtime(max(self.mtime, 315532800))[:6])
                info.compress_type = zipfile.ZIP_DEFLATED
                kind = 0o120000 if entry.kind == LINK else 0o100000
                info.external_attr = (kind | (0o777 if entry.kind == LINK else _mode(entry))) << 16
                self.zip.writestr(info, data)
            else:
                assert self.tar is not None
                tinfo = tarfile.TarInfo(path)
                tinfo.mtime = int(self.mtime)
                if entry.kind == LINK:
                    tinfo.type = tarfile.SYMTYPE
                    tinfo.linkname = data.decode("utf-8", "replace")
                    self.tar.addfile(tinfo)
                else:
                    tinfo.size, tinfo.mode = len(data), _mode(entry)
                    self.tar.addfile(tinfo, io.BytesIO(data))

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
        if self.tar is not None:
            self.tar.close()


async def _stream(rv: RepoView, at: int, fmt: str, top: str) -> AsyncIterator[bytes]:
    root = await rv.repo.mainline.tree_at(at)
    mtime = (await rv.repo.mainline.record(at)).time if at else time.time()
    writer = _Writer(fmt, mtime)
    batch: list[tuple[str, Entry, bytes]] = []
    size = 0
    async for path, entry in walk(rv.repo.objects, root):
        data = await rv.repo.objects.get_blob(entry.oid)
        batch.append((f"{top}/{path}", entry, data))
        size += len(data)
        if size >= BATCH_BYTES:
            await asyncio.to_thread(writer.add, batch)
            batch, size = [], 0
            yield writer.sink.take()
    await asyncio.to_thread(writer.add, batch)
    await asyncio.to_thread(writer.close)
    yield writer.sink.take()


async def archive(owner: str, name: str, ref: str) -> Response:
    """``/owner/name/archive/<position>.zip`` (or ``.tar.gz``): the tree at that position, every
    file under one top directory ``name-position``."""
    rv = await open_repo(owner, name)
    fmt = next((f for f in FORMATS if ref.endswith("." + f)), None)
    pos = ref[: -len(fmt) - 1] if fmt else ""
    if fmt is None or not (pos.isascii() and pos.isdigit()) or len(pos) > 18:
        raise NotFound("an archive is <position>.zip or <position>.tar.gz")
    at = int(pos)
    if at > rv.head:
        raise NotFound(f"no position {at} in {rv.name} (the head is {rv.head})")
    top = f"{rv.short}-{at}"
    filename = f"{top}.{fmt}"
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
               "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
    return Response(_stream(rv, at, fmt, top), content_type=FORMATS[fmt], headers=headers)


bp.add_url_rule("/<owner>/<name>/archive/<ref>", endpoint="archive", view_func=archive, methods=["GET"])
mirrored("/<owner>/<name>/archive/<ref>", "mirror_archive", archive)
