"""Cutting the image out of a multipart body: what browsers, curl and httpx send, and what they never do."""

from __future__ import annotations

import httpx
import pytest
from fastapi import HTTPException

from digitrec.server.upload import file_from_multipart


def encoded(files: dict, data: dict | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) exactly as httpx would send them."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def test_the_file_part_is_cut_out_byte_for_byte() -> None:
    image = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"
    content_type, body = encoded({"file": ("a;b \"c\".png", image, "image/png")}, {"mode": "digit"})
    assert file_from_multipart(content_type, body) == image


def test_the_file_part_is_a_view_of_the_body_not_a_copy() -> None:
    """Each copy of a 10 MB upload held the event loop for milliseconds: the image is handed on as a view."""
    content_type, body = encoded({"file": ("a.png", b"\x89PNG" * 1000, "image/png")})
    part = file_from_multipart(content_type, body)
    assert isinstance(part, memoryview) and part.obj is body and part.readonly


def test_a_quoted_boundary_and_a_preamble_are_understood() -> None:
    body = (b"preamble\r\n--abc def\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
            b"PIXELS\r\n--abc def--\r\n")
    assert file_from_multipart('multipart/form-data; boundary="abc def"', body) == b"PIXELS"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [("multipart/form-data", b"", "no boundary"),
     ("multipart/form-data; boundary=zz", b"--yy\r\n", "never appears"),
     ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx",
      "never ends"),
     ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data; name=\"file\"", "never end"),
     ("multipart/form-data; boundary=zz",
      b"".join(b"--zz\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % i for i in range(20)) + b"--zz--",
      "too many")],
    ids=["no-boundary", "boundary-missing", "unterminated-part", "unterminated-headers", "too-many-fields"],
)
def test_malformed_bodies_are_422(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(HTTPException) as caught:
        file_from_multipart(content_type, body)
    assert caught.value.status_code == 422 and message in caught.value.detail
