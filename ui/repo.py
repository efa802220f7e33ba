"""Repository pages: tree, file, blame, raw, settings (for mirrors too, under ``/mirrors/<host>``)."""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from markupsafe import Markup, escape
from quart import Response, redirect, render_template, request

from hif import history
from hif.blame import BlameLine
from hif.errors import (
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from hif.mainline import LandingRecord
from hif.merge import is_binary
from hif.objects import DIR, LINK, Entry
from hif.tree import lookup
from node.heavy import cached_blame
from node.principal import Principal, role_rank
from node.repos import (
    check_owner,
    create_repository,
    delete_repository,
    is_owner,
    update_repository,
)
from node.wire import query_int
from ui.auth import set_flash, take_flash, viewer
from ui.heavy import cache, offload, warm_later
from ui.render import (
    FileView,
    Highlighter,
    Resolve,
    code_rows,
    file_view,
    human_size,
    markdown,
    person,
)
from ui.sessions import open_sessions
from ui.web import (
    RepoView,
    bp,
    clean_path,
    client_has,
    count_offers,
    crumbs,
    form_status,
    grantable,
    login_redirect,
    mirrored,
    node,
    open_repo,
    page_status,
)

# -- repository pages ------------------------------------------------------------------------------

BLAME_MAX = 512 * 1024
BLAME_HTML = 900 * 1024  # bytes of blame rows one page holds; a longer blame continues on ?from=
README_NAMES = ("readme.md", "readme.markdown", "readme", "readme.txt", "readme.rst")
MARKDOWN = (".md", ".markdown")
IMAGES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
          "webp": "image/webp", "avif": "image/avif", "bmp": "image/bmp", "ico": "image/x-icon",
          "svg": "image/svg+xml"}  # previewed on the file page, served as themselves by raw
RAW_CSP = "sandbox; default-src 'none'"
# an image opened on its own: the browser's image view may style it, an SVG may style itself, nothing runs
IMAGE_CSP = RAW_CSP + "; style-src 'unsafe-inline'; img-src data:"


def image_type(path: str) -> str | None:
    """The image content type a file name promises (the bytes are served with nosniff)."""
    return IMAGES.get(posixpath.splitext(path)[1].lstrip(".").casefold())


def _resolver(rv: RepoView, directory: str, at_q: int | None) -> Resolve:
    """Relative links of a Markdown file in ``directory``: images to the raw file, links to its
    page, both at the same position; a path climbing out of the repository is dropped."""

    def resolve(tag: str, url: str) -> str | None:
        parts = urlsplit(url)
        if not parts.path:
            return url
        target = posixpath.normpath(posixpath.join(directory, unquote(parts.path)))
        if target == ".." or target.startswith("../"):
            return None
        target = "" if target == "." else target
        link = rv.url("raw" if tag == "img" else "blob", quote(target), at=at_q) if target else rv.url(at=at_q)
        return link + ("#" + parts.fragment if parts.fragment else "")

    return resolve


@bp.get("/<owner>/<name>")
async def repo_home(owner: str, name: str) -> Response | str:
    return await _tree(owner, name, "")


@bp.get("/<owner>/<name>/tree/<path:path>")
async def tree(owner: str, name: str, path: str) -> Response | str:
    return await _tree(owner, name, path)


async def _tree(owner: str, name: str, path: str) -> Response | str:
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    at_q = at if at != rv.head else None
    root = await rv.repo.mainline.tree_at(at)
    entry = await lookup(rv.repo.objects, root, path) if path else Entry(DIR, root)
    if entry is None:
        raise NotFound(f"no {path} at position {at}")
    if entry.kind != DIR:
        return redirect(rv.url("blob", path, at=at_q))  # type: ignore[return-value]
    listing = await rv.repo.objects.get_tree(entry.oid)
    entries = sorted(listing.items(), key=lambda kv: (kv[1].kind != DIR, kv[0].casefold(), kv[0]))
    readme = None
    for n, e in entries:
        if e.kind != DIR and n.casefold() in README_NAMES:
            data = await rv.repo.objects.get_blob(e.oid)
            text = data[: 512 * 1024].decode("utf-8", "replace")
            is_md = n.casefold().endswith(MARKDOWN)
            readme = {"name": n, "text": text,
                      "html": await asyncio.to_thread(markdown, text, _resolver(rv, path, at_q)) if is_md else None}
            break
    recent: list[LandingRecord] = []
    open_rows: list[dict[str, Any]] = []
    if not path:
        recent = [r async for r in rv.repo.mainline.iter_back(at, max(1, at - 9))] if at else []
        open_rows = await open_sessions(rv.repo, cap=10)
        await count_offers(rv)
    return await render_template(
        "tree.html", rv=rv, path=path, at=at, at_q=at_q, entries=entries, readme=readme,
        crumbs=crumbs(rv, path, at_q), recent=recent, open_rows=open_rows, node_url=node().config.url,
    )


@dataclass
class FilePage:
    """What the file and blame pages start from: the file at the asked position, and its bytes."""

    rv: RepoView
    path: str
    at: int
    at_q: int | None  # the position for links, None at the head
    entry: Entry
    data: bytes


async def _file_page(owner: str, name: str, path: str) -> FilePage | Response:
    """The file ``path`` of a repository at ``?at=`` (or the head); a directory redirects to its tree."""
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    at_q = at if at != rv.head else None
    entry = await _file(rv, path, at)
    if entry.kind == DIR:
        return redirect(rv.url("tree", path, at=at_q))  # type: ignore[return-value]
    return FilePage(rv, path, at, at_q, entry, await rv.repo.objects.get_blob(entry.oid))


async def _file(rv: RepoView, path: str, at: int) -> Entry:
    if not path:
        raise NotFound("no file named")
    root = await rv.repo.mainline.tree_at(at)
    entry = await lookup(rv.repo.objects, root, path)
    if entry is None:
        raise NotFound(f"no {path} at position {at}")
    return entry


@bp.get("/<owner>/<name>/blob/<path:path>")
async def blob(owner: str, name: str, path: str) -> Response | str:
    page = await _file_page(owner, name, path)
    if not isinstance(page, FilePage):
        return page
    rv, path, at, at_q, entry, data = page.rv, page.path, page.at, page.at_q, page.entry, page.data
    view: FileView | None = None
    target = None
    rendered = None
    hl = Highlighter(cache("highlight"))
    if entry.kind == LINK:
        target = data.decode("utf-8", "replace")
    else:
        view = await offload(file_view, data, path, hl)
        if (path.casefold().endswith(MARKDOWN) and not view.binary and not view.truncated
                and request.args.get("plain") != "1"):
            rendered = await offload(markdown, data.decode("utf-8", "replace"),
                                     _resolver(rv, posixpath.dirname(path), at_q))
    hist = await history.file_history(rv.repo, path, at, limit=10, budget=500)
    body = await render_template("blob.html", rv=rv, path=path, at=at, at_q=at_q, entry=entry, view=view,
                                 target=target, history=hist, crumbs=crumbs(rv, path, at_q),
                                 code_rows=code_rows(view.lines) if view and rendered is None else "",
                                 rendered=rendered, image=image_type(path) if entry.kind != LINK else None,
                                 markdown_file=path.casefold().endswith(MARKDOWN))
    warm_later(hl)
    return body


@bp.get("/<owner>/<name>/blame/<path:path>")
async def blame_page(owner: str, name: str, path: str) -> Response | str:
    page = await _file_page(owner, name, path)
    if not isinstance(page, FilePage):
        return page
    rv, path, at, at_q, entry, data = page.rv, page.path, page.at, page.at_q, page.entry, page.data
    hl = Highlighter(cache("highlight"))
    view = await offload(file_view, data, path, hl)
    notice = None
    rows = Markup("")
    start = query_int("from", 1, lo=1)
    assert start is not None
    part: tuple[int, int, int] | None = None  # (first line, last line, lines in all) of a long blame
    if entry.kind == LINK or view.binary:
        notice = "Blame works on text files; this one is binary or a link."
    elif len(data) > BLAME_MAX:
        notice = f"Blame is shown for files up to {human_size(BLAME_MAX)}; this one is {human_size(len(data))}."
    else:
        lines = await cached_blame(rv.repo, path, at)
        if start > max(1, len(lines)):
            raise NotFound(f"{path} has {len(lines)} lines at position {at}")
        rows, last = await offload(blame_rows, rv, lines, view.lines, start)
        if start > 1 or last < len(lines):
            part = (start, last, len(lines))
    body = await render_template("blame.html", rv=rv, path=path, at=at, at_q=at_q, rows=rows, part=part,
                                 notice=notice, crumbs=crumbs(rv, path, at_q))
    warm_later(hl)  # what the page's highlighting budget left plain, for the next view
    return body


def blame_rows(rv: RepoView, lines: list[BlameLine], html: list[Markup], start: int = 1) -> tuple[Markup, int]:
    """The blame table's rows from line ``start`` until :data:`BLAME_HTML` bytes, and the last line
    they hold; built here rather than in a template loop (thousands of lines). The first line of
    each run names the session (or the imported commit) that wrote it, the others leave the cell
    empty, so the page grows by a few bytes per line."""
    out: list[str] = []
    size = 0
    prev: tuple[str, str] | None = None
    html = html + [Markup("")] * (len(lines) - len(html))
    last = start - 1
    for ln, src in zip(lines[start - 1:], html[start - 1:], strict=False):
        n = ln.line
        if size > BLAME_HTML:
            break
        if not ln.session:
            who = '<span class="muted" title="no landed session wrote this line">—</span>'
        elif (ln.session, ln.commit) != prev:
            commit = f" {ln.commit[:8]}" if ln.commit else ""
            title = escape(f"{ln.goal} — {person(ln.author, addresses=rv.member)}")
            label = escape(f"#{ln.position}{commit} {ln.goal[:40] + ('…' if len(ln.goal) > 40 else '')}")
            who = f'<a href="{escape(rv.url("sessions", ln.session))}" title="{title}">{label}</a>'
        else:  # the same as the line above: an empty cell keeps the page small
            who = ""
        first = ' class="first"' if (ln.session, ln.commit) != prev else ""
        prev = (ln.session, ln.commit)
        out.append(f'<tr id="L{n}"{first}><td{" class=who" if who else ""}>{who}</td>'
                   f'<td class="ln"><a href="#L{n}">{n}</a></td><td class="src">{src}</td></tr>')
        size += len(out[-1])
        last = n
    return Markup("".join(out)), last


@bp.get("/<owner>/<name>/raw/<path:path>")
async def raw(owner: str, name: str, path: str) -> Response:
    """The file's bytes, never interpreted by the browser as a page of this site."""
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    entry = await _file(rv, path, at)
    if entry.kind == DIR:
        raise NotFound(f"{path} is a directory")
    image = image_type(path) if entry.kind != LINK else None
    # the blob's id is the ETag: a client holding these bytes is told so before they are read
    tag = f'"{entry.oid.hex()}"'
    headers = {"Content-Security-Policy": RAW_CSP if image is None else IMAGE_CSP,
               "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=60", "ETag": tag}
    if client_has(tag):
        return Response(b"", status=304, headers=headers)
    data = await rv.repo.objects.get_blob(entry.oid)
    binary = is_binary(data)
    filename = quote(path.rsplit("/", 1)[-1], safe="")
    if image is not None:  # shown by the file page's <img>; opened alone it is an image, nothing more
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{filename}"
        return Response(data, content_type=image, headers=headers)
    if binary:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{filename}"
    return Response(data, content_type="application/octet-stream" if binary else "text/plain; charset=utf-8",
                    headers=headers)


# -- creating a repository -------------------------------------------------------------------------


async def _owners(p: Principal) -> list[str]:
    """Where ``p`` may create repositories: their own namespace, then the organisations they
    maintain or own (``Accounts.can_create_repo`` decides again on submit)."""
    assert p.user is not None
    orgs = await node().auth.orgs_of(p.user)
    return [p.user, *(o for o, role in orgs.items() if role_rank(role) >= role_rank("maintainer"))]


async def _new_page(p: Principal, form: Any, error: str | None = None, status: int = 200) -> tuple[str, int]:
    page = await render_template("new_repo.html", owners=await _owners(p), form=form, error=error)
    return page, status


@bp.get("/new")
async def new_repo() -> Response | tuple[str, int]:
    p = await viewer()
    if p.user is None:
        return login_redirect()
    return await _new_page(p, {"owner": request.args.get("owner", "")})


@bp.post("/new")
async def new_repo_post() -> Response | tuple[str, int]:
    """Create a repository through the API's own code path (``node.repos.create_repository``)."""
    p = await viewer()
    if p.user is None:
        return login_redirect()
    form = await request.form
    name = f"{form.get('owner', '').strip()}/{form.get('name', '').strip()}"
    try:
        await create_repository(node(), p, name, private=form.get("private") == "1",
                                description=form.get("description", "").strip())
    except HifError as e:
        return await _new_page(p, form, str(e), page_status(e))
    return redirect("/" + name, 303)  # type: ignore[return-value]


# -- settings --------------------------------------------------------------------------------------


async def _settings_page(rv: RepoView, error: str | None = None, status: int = 200) -> tuple[str, int]:
    members = await node().auth.repo_members(rv.name)
    org = await node().auth.get_org(rv.owner)
    flash = await take_flash() or {}
    page = await render_template("settings.html", rv=rv, members=members, org=org, roles=grantable(rv.role),
                                 error=error, done=flash.get("done"), can_delete=is_owner(rv.p, rv.role))
    return page, status


@bp.post("/<owner>/<name>/settings/repo")
async def settings_repo(owner: str, name: str) -> Response | tuple[str, int]:
    """Description and visibility (maintainers and owners)."""
    rv = await open_repo(owner, name, "admin")
    form = await request.form
    try:
        await update_repository(node(), rv.name, description=form.get("description", "").strip(),
                                private=form.get("visibility") == "private")
    except HifError as e:
        rv.info = {**rv.info, "description": form.get("description", "")}
        return await _settings_page(rv, str(e), page_status(e))
    await set_flash(done="Saved.")
    return redirect(rv.url("settings"), 303)  # type: ignore[return-value]


@bp.post("/<owner>/<name>/settings/delete")
async def settings_delete(owner: str, name: str) -> Response | tuple[str, int]:
    """Delete the repository (owners only), once its full name is typed as confirmation."""
    rv = await open_repo(owner, name, "admin")
    check_owner(rv.p, rv.role, rv.name)
    try:
        await delete_repository(node(), rv.name, (await request.form).get("confirm", ""))
    except InvalidInput as e:
        return await _settings_page(rv, str(e), 400)
    await set_flash(done=f"Deleted {rv.name}.")
    return redirect("/", 303)  # type: ignore[return-value]


@bp.get("/<owner>/<name>/settings")
async def settings(owner: str, name: str) -> Response | tuple[str, int]:
    if (await viewer()).user is None:
        await open_repo(owner, name)  # a private or missing repository stays a 404
        return login_redirect()
    return await _settings_page(await open_repo(owner, name, "admin"))


@bp.post("/<owner>/<name>/settings/members")
async def settings_member_set(owner: str, name: str) -> Response | tuple[str, int]:
    rv = await open_repo(owner, name, "admin")
    form = await request.form
    try:
        await node().auth.set_repo_member(rv.name, form.get("user", "").strip(), form.get("role", ""),
                                          by=rv.p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return (await _settings_page(rv, str(e)))[0], form_status(e)
    return redirect(rv.url("settings"))  # type: ignore[return-value]


@bp.post("/<owner>/<name>/settings/members/<user>/remove")
async def settings_member_remove(owner: str, name: str, user: str) -> Response | tuple[str, int]:
    rv = await open_repo(owner, name, "admin")
    try:
        await node().auth.remove_repo_member(rv.name, user, by=rv.p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return (await _settings_page(rv, str(e)))[0], form_status(e)
    return redirect(rv.url("settings"))  # type: ignore[return-value]

for _rule, _endpoint, _view in (
    ("/<owner>/<name>", "mirror_home", repo_home),
    ("/<owner>/<name>/tree/<path:path>", "mirror_tree", tree),
    ("/<owner>/<name>/blob/<path:path>", "mirror_blob", blob),
    ("/<owner>/<name>/blame/<path:path>", "mirror_blame", blame_page),
    ("/<owner>/<name>/raw/<path:path>", "mirror_raw", raw),
):
    mirrored(_rule, _endpoint, _view)
