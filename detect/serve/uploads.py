"""Getting one image out of a request, within limits.

An image arrives as
- a multipart upload (field ``image``, or ``file`` as Roboflow's clients send it),
- the raw body (``Content-Type: image/*`` or ``application/octet-stream``),
- base64 text in the body (Roboflow's hosted API: ``application/x-www-form-urlencoded``), or
- a URL (``?url=``, Roboflow's ``?image=``), fetched only when ``detect serve --allow-urls``
  names its host (no redirects followed, the same byte limit).

Limits: :class:`BodyLimit` stops reading a body at ``max_bytes`` (413, whether or not the client
sent a Content-Length); the pixel limit is read from the image's header before anything is
decoded, by :func:`detect.infer.sources.decode_bytes`, the decoder ``detect predict`` uses.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detect.infer.sources import decode_bytes
from detect.serve.errors import ApiError

IMAGE_FIELDS = ("image", "file")  # multipart field names looked at, in this order
RAW_TYPES = ("image/", "application/octet-stream")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")  # JPEG PNG GIF BMP WEBP TIFF


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body passes the limit (answered as 413)."""


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` is refused, by its
    Content-Length before it is read or, for chunked uploads, as soon as the count passes."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refuse: Optional[Callable[[], None]] = None) -> None:
        self.app, self.max_bytes, self.on_refuse = app, int(max_bytes), on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if self.on_refuse is not None:
                self.on_refuse()
            return await _send_413(send, self.max_bytes)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than the limit of {max_bytes:,} bytes "
                    "(detect serve --max-upload-mb)")


async def _send_413(send: Send, max_bytes: int) -> None:
    import json

    body = json.dumps(too_large(max_bytes).body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded image as BGR uint8 ``[H, W, 3]`` (:func:`detect.infer.sources.decode_bytes`,
    ``detect predict``'s decoder and pixel limit), or an :class:`ApiError` that says what is wrong."""
    image, error = decode_bytes(data, max_pixels)
    if image is None:
        if error and "megapixels" in error:
            raise ApiError(413, "too_many_pixels", error.replace("(--max-pixels)", "(detect serve --max-pixels)"))
        raise ApiError(400, "unreadable_image", f"the upload is {error}" if error == "empty file" else
                       f"the upload is {error}: send a JPEG, PNG, WebP, BMP or TIFF file")
    return image


@dataclass
class Upload:
    """What a request body held: the image's bytes, its file name ("" when not sent as a
    named file) and the other multipart fields asked for (``name -> (file name, bytes)``; a
    text field's file name is the field's name)."""

    data: bytes
    filename: str = ""
    extras: dict[str, tuple[str, bytes]] = field(default_factory=dict)


async def read_body_image(request: Request, base64_body: bool = False) -> bytes:
    """The image bytes of a request's body (see :func:`read_upload`)."""
    return (await read_upload(request, base64_body)).data


async def read_upload(request: Request, base64_body: bool = False, extras: tuple[str, ...] = (),
                      need_image: bool = True) -> Upload:
    """The image of a request's body (see the module docstring), and the multipart fields named
    in ``extras`` (files or text; ``POST /v1/audit``'s planogram); ``base64_body``: a body that
    does not start like an image may be base64 text of one (Roboflow's clients). ``need_image``
    False: a multipart body without an image gives empty ``data`` (the image comes by URL)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=4, max_fields=32)
        except BodyTooLarge:
            raise
        except Exception as e:  # python-multipart and starlette raise several kinds for a broken body
            raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed ({e})") from None
        try:
            found = {}
            for name in extras:
                part = form.get(name)
                if isinstance(part, UploadFile):
                    found[name] = (part.filename or name, await part.read())
                elif isinstance(part, str):
                    found[name] = (name, part.encode("utf-8"))
            for name in IMAGE_FIELDS:
                part = form.get(name)
                if isinstance(part, UploadFile):
                    return Upload(await part.read(), part.filename or "", found)
                if isinstance(part, str):
                    raise ApiError(400, "not_a_file", f"the multipart field {name!r} is text, not a file upload")
            if not need_image:
                return Upload(b"", "", found)
            fields = ", ".join(repr(k) for k in form.keys()) or "none"
            raise ApiError(400, "missing_image", f"no image in the multipart body: send it as the field 'image' "
                           f"(or 'file'); the body had the fields {fields}")
        finally:
            await form.close()
    data = await request.body()
    if not data:
        raise ApiError(400, "missing_image", "no image in the request: send a multipart upload (field 'image'), the "
                       "image bytes as the body (Content-Type: image/jpeg ...), or ?url= on a server started with "
                       "--allow-urls")
    if base64_body or ctype == "application/x-www-form-urlencoded":
        if not data.startswith(_MAGIC):
            return Upload(_from_base64(data))
    elif ctype and not ctype.startswith(RAW_TYPES) and ctype != "application/x-www-form-urlencoded":
        raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype} is not an image: send multipart/form-data, "
                       "image/* or application/octet-stream")
    return Upload(data)


def _from_base64(data: bytes) -> bytes:
    text = data.strip()
    if text.startswith(b"data:") and b"," in text[:100]:  # a data: URL from a browser
        text = text.split(b",", 1)[1]
    text = urllib.parse.unquote_to_bytes(text) if b"%" in text[:200] else text
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "the body is neither an image nor base64 text of one") from None


async def fetch_url(url: str, allow_urls: frozenset[str], max_bytes: int, headers: Optional[dict] = None) -> bytes:
    """The bytes at ``url`` when its host is allowed (``detect serve --allow-urls``), over
    http(s), without following redirects (a redirect could lead anywhere), within ``max_bytes``."""
    if not allow_urls:
        raise ApiError(403, "urls_not_allowed", "this server does not fetch URLs; upload the image, or start it with "
                       "--allow-urls HOST[,HOST...]")
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError(400, "bad_url", f"{url!r} is not an http(s) URL")
    if host not in allow_urls and "*" not in allow_urls:
        raise ApiError(403, "host_not_allowed", f"host {host!r} is not in this server's --allow-urls list")
    import httpx

    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=10.0) as client:
            async with client.stream("GET", url, headers=headers) as r:
                if r.status_code != 200:
                    raise ApiError(400, "url_failed", f"{url} answered HTTP {r.status_code}")
                chunks, seen = [], 0
                async for chunk in r.aiter_bytes():
                    seen += len(chunk)
                    if seen > max_bytes:
                        raise ApiError(413, "body_too_large", f"{url} is larger than the limit of {max_bytes:,} bytes")
                    chunks.append(chunk)
    except httpx.HTTPError as e:
        raise ApiError(400, "url_failed", f"{url} could not be fetched ({type(e).__name__}: {e})") from None
    return b"".join(chunks)
