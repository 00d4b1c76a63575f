"""`/archive/…`: the sent issues' web pages and each list's index, and nothing else.

Only `.html` files under `outbox/archive` are published: no dotfiles, no other file types,
nothing a symlink leads to outside the folder, nothing but regular files. A folder's URL
without its slash is redirected with a relative Location, so the Host header of the
request can never send a reader elsewhere.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.web.headers import ARCHIVE_CSP

# The names the archive writes: list ids, dates, topic slugs, `.html`. A name that starts
# with a dot (".", "..", dotfiles) or holds a separator, NUL or a colon cannot match.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_MAX_PAGE = 10 * 1024 * 1024
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))


@dataclass(frozen=True)
class _Page:
    body: bytes


@dataclass(frozen=True)
class _Folder:
    location: str  # relative: the last segment and a slash


def archive_routes(root: Path) -> list[Route]:
    """Routes that publish the archive pages under `root` (outbox/archive)."""

    async def page(request: Request) -> Response:
        found = await run_in_threadpool(lookup, root, request.path_params.get("path", None))
        if isinstance(found, _Page):
            return Response(found.body, media_type="text/html",
                            headers={"Content-Security-Policy": ARCHIVE_CSP})
        if isinstance(found, _Folder):
            return RedirectResponse(found.location, status_code=307)
        return PlainTextResponse("Not Found", status_code=404)

    return [Route("/archive", page, methods=["GET"]),
            Route("/archive/{path:path}", page, methods=["GET"])]


def lookup(root: Path, path: str | None) -> _Page | _Folder | None:
    """What `/archive/<path>` answers (`path` None for `/archive` itself): a page, a
    redirect to a folder's URL with its slash, or nothing (None)."""
    segments = [] if path is None else path.split("/")
    slash = path is not None and segments[-1] == ""
    if slash:
        segments.pop()
    if not all(_NAME.fullmatch(s) for s in segments):
        return None
    target = root.joinpath(*segments)
    if segments and not slash and segments[-1].endswith(".html"):
        body = _read(root, target)
        return None if body is None else _Page(body)
    index = _read(root, target / "index.html")
    if index is None:
        return None
    return _Page(index) if slash else _Folder(f"{segments[-1] if segments else 'archive'}/")


def _read(root: Path, path: Path) -> bytes | None:
    """The bytes of `path` if it is a published page: an `.html` regular file whose real
    location is inside `root` under names that are all allowed; else None."""
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        inside = os.path.relpath(real, real_root).split(os.sep)
        if not real.endswith(".html") or not all(_NAME.fullmatch(s) for s in inside):
            return None
        fd = os.open(real, _OPEN_FLAGS)
    except (OSError, ValueError):  # missing, unreadable, a name too long, a NUL byte
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_PAGE:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
