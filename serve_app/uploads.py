"""Uploads: the guard in front of every request body, and copying an uploaded file into a job's folder.

``UploadGuard`` (pure ASGI middleware) sees every POST before the app parses it:

* an upload route whose Content-Type is not ``multipart/form-data``: 415 at once, nothing read;
* a Content-Length above ``max_bytes``: 413 at once, nothing read; a body that grows past it while
  streaming (chunked uploads, lying headers): 413 as soon as it does;
* a body that stalls (no bytes for ``idle_timeout`` s) or is not complete within ``total_timeout`` s: 408,
  so a slow client holds a connection and a few buffers, never a queue slot or the device.

The app then parses the form (Starlette spools files above 1 MB to anonymous temporary files, which the
OS removes when they are closed) and ``save_upload`` copies one into the job's private folder under a
fixed name whose extension follows the file's magic bytes, not the client's file name.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gan_core.image_io import INPUT_EXTENSIONS

from .errors import ApiError, error_body

__all__ = ["UploadGuard", "client_name", "save_upload", "sniff_extension"]

_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
          (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sniff_extension(head: bytes, client_suffix: str = "") -> str:
    """File extension for an upload from its first bytes (PNG, JPEG, GIF, BMP, TIFF, WebP); else the
    client's suffix when sr-infer reads that type, else ``.img`` (Pillow still identifies the data)."""
    for magic, ext in _MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    suffix = client_suffix.lower()
    return suffix if suffix in INPUT_EXTENSIONS else ".img"


def client_name(filename: str | None, default: str = "image") -> str:
    """A display- and header-safe version of an uploaded file's name (no folders, ASCII, at most 100 chars)."""
    name = Path((filename or "").replace("\\", "/")).name
    name = _UNSAFE.sub("_", name).strip("._")[:100]
    return name or default


def save_upload(file, folder: Path, stem: str, filename: str | None) -> Path:
    """Copy the open binary ``file`` (an ``UploadFile.file``) to ``folder/<stem><ext>`` (blocking: call in
    a thread); ``ext`` from ``sniff_extension``. Returns the path."""
    file.seek(0)
    head = file.read(16)
    file.seek(0)
    path = folder / f"{stem}{sniff_extension(head, Path(filename or '').suffix)}"
    with open(path, "xb") as out:
        shutil.copyfileobj(file, out, 1 << 20)
    return path


class UploadGuard:
    """See module docstring. ``multipart_paths``: the routes that take ``multipart/form-data``."""

    def __init__(self, app: ASGIApp, max_bytes: int, multipart_paths: set[str], idle_timeout: float = 10.0,
                 total_timeout: float = 120.0, on_error=None) -> None:  # fmt: skip
        self.app = app
        self.max_bytes = max_bytes
        self.multipart_paths = multipart_paths
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self.on_error = on_error or (lambda code: None)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, msg: str) -> None:
        self.on_error(code)
        headers = {"Connection": "close"}  # the unread body is not drained: this connection ends here
        await JSONResponse(error_body(code, msg), status, headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        mb = f"{self.max_bytes / 2**20:g} MiB"
        if path in self.multipart_paths:
            ctype = headers.get("content-type", "")
            if not ctype.lower().startswith("multipart/form-data"):
                got = ctype.split(";")[0] or "no Content-Type"
                msg = f"{path} takes multipart/form-data (a form with file fields), got {got}"
                await self._reject(scope, receive, send, 415, "unsupported_media_type", msg)
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await self._reject(scope, receive, send, 400, "bad_request", f"invalid Content-Length {length!r}")
                return
            if int(length) > self.max_bytes:
                msg = f"the request body is {int(length) / 2**20:.1f} MiB, above the limit of {mb} (--max-upload-mb)"
                await self._reject(scope, receive, send, 413, "too_large", msg)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout
        received = 0
        complete = False

        async def guarded() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later receives wait for a disconnect, without a deadline
                return await receive()
            wait = min(self.idle_timeout, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except asyncio.TimeoutError:
                if deadline - loop.time() <= 0:
                    why = f"the upload was not complete within {self.total_timeout:g} s"
                else:
                    why = f"the upload stalled: no data for {self.idle_timeout:g} s"
                raise ApiError(408, "upload_timeout", why, {"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    msg = f"the request body is above the limit of {mb} (--max-upload-mb)"
                    raise ApiError(413, "too_large", msg, {"Connection": "close"})
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, guarded, send)
