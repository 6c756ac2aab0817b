"""Reading a response body, decoded, never past a size limit.

httpx decodes a whole raw chunk at once: 64 kB of a gzip bomb become 64 MB in one piece. Here
the raw stream is decompressed a megabyte at a time (zlib's `max_length`), so a body costs at
most the limit plus a megabyte of memory, however well it compresses. Only the encodings we
ask for (ACCEPT_ENCODING) are read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

ACCEPT_ENCODING = "gzip, deflate"
PIECE = 1 << 20


class BodyTooLarge(Exception):
    """The decoded body passed the limit."""


class UnreadableBody(Exception):
    """The body's encoding is one we did not ask for, or its compressed data is corrupt."""


def read_body(response: httpx.Response, limit: int) -> bytearray:
    """The decoded body; BodyTooLarge past `limit` bytes, UnreadableBody for bad encoding."""
    body = bytearray()
    for piece in _decoded(response):
        body += piece
        if len(body) > limit:
            raise BodyTooLarge()
    return body


def _decoded(response: httpx.Response) -> Iterator[bytes]:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        yield from response.iter_raw(PIECE)
        return
    if encoding not in ("gzip", "deflate"):
        raise UnreadableBody(f"a body in an encoding not asked for ({encoding!r})")
    # gzip or zlib framing, told apart by the header (wbits + 32); raw deflate (as some servers
    # send for "deflate") when that fails on the first bytes.
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)
    started = False
    try:
        for raw in response.iter_raw():
            if not started and encoding == "deflate":
                try:
                    decompressor.copy().decompress(raw[:64])
                except zlib.error:
                    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            started = True
            data = raw
            while data:
                yield decompressor.decompress(data, PIECE)
                data = decompressor.unconsumed_tail
        yield decompressor.flush()
    except zlib.error as exc:
        raise UnreadableBody(f"a {encoding} body that does not decompress ({exc})") from None
