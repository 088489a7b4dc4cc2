"""The image bytes of an upload: a raw body, or the `file` field of a multipart form.

The body is read only after its bytes are admitted (see `admission`), and never past the size limit. The
multipart form is cut with `bytes.find` rather than a streaming parser: the form holds one small file,
the body is already in memory, and the general parser (a spooled temporary file, a copy per layer) cost
more per request than reading the digit (and ~30 MB of memory per 10 MB upload). The image is handed on as
a view of the body, not a copy: every copy of a 10 MB upload held the event loop for milliseconds.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, Request

MAX_FIELDS = 16
# name="value" or name=value, in a Content-Disposition header; quoted values may hold ';' and '\"'.
PARAMETER = re.compile(rb'([\w*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def declared_length(request: Request, max_bytes: int) -> int:
    """The body's Content-Length; 413 past `max_bytes`; `max_bytes` when it is not given (chunked)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return max_bytes
    if int(declared) > max_bytes:
        raise body_too_large(max_bytes)  # refused before reading a byte
    return int(declared)


def body_too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"request body over the {max_bytes / 1e6:g} MB limit")


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The whole body, 413 as soon as it passes `max_bytes` (whatever Content-Length said)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise body_too_large(max_bytes)
    return body


async def read_image_bytes(request: Request, max_bytes: int) -> memoryview:
    """The image bytes of a multipart (`file`) or raw body, as a view of the body (read-only); 413 past
    `max_bytes`, 422 when there is none."""
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return file_from_multipart(content_type, body)
    if not body:
        raise HTTPException(422, "no image in the request: send it as multipart field 'file' or as the body")
    return memoryview(body).toreadonly()


def malformed(why: str) -> HTTPException:
    return HTTPException(422, f"malformed multipart body: {why}")


def file_from_multipart(content_type: str, body: bytes | bytearray) -> memoryview:
    """The content of the multipart part named `file` (which must be a file, not a text field): a read-only
    view of `body`."""
    match = BOUNDARY.search(content_type)
    if match is None:
        raise malformed("no boundary in the Content-Type header")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise malformed("the boundary never appears in the body")
    at = start + len(delimiter)
    for _ in range(MAX_FIELDS):
        if body.startswith(b"--", at):  # the closing delimiter
            break
        if not body.startswith(b"\r\n", at):
            raise malformed("expected a line break after the boundary")
        headers_end = body.find(b"\r\n\r\n", at + 2)
        if headers_end < 0:
            raise malformed("a part's headers never end")
        content_start = headers_end + 4
        content_end = body.find(b"\r\n" + delimiter, content_start)
        if content_end < 0:
            raise malformed("a part never ends (no closing boundary)")
        name, filename = disposition(body[at + 2:headers_end])
        if name == b"file":
            if filename is None:
                raise HTTPException(422, "multipart field 'file' must be a file, not text")
            return memoryview(body).toreadonly()[content_start:content_end]
        at = content_end + 2 + len(delimiter)
    else:
        raise HTTPException(422, f"too many multipart fields (at most {MAX_FIELDS})")
    raise HTTPException(422, "missing multipart field 'file' (the image)")


def disposition(headers: bytes) -> tuple[bytes | None, bytes | None]:
    """(name, filename) from a part's Content-Disposition header; None for what it does not give."""
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() != b"content-disposition":
            continue
        parameters = {}
        for found in PARAMETER.finditer(value):
            quoted, bare = found.group(2), found.group(3)
            parameters[found.group(1).lower()] = quoted.replace(b'\\"', b'"') if quoted is not None else bare
        filename = parameters.get(b"filename", parameters.get(b"filename*"))
        return parameters.get(b"name"), filename
    return None, None
