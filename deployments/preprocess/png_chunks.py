"""Refuse PNGs made of far more chunks than their size explains, before Pillow reads them.

Pillow parses a PNG chunk by chunk in Python, microseconds each: a 12 MB file of a million
empty chunks cost 7-9 s of CPU and decodes to nothing. Encoders write image data in chunks
of 8-64 KB plus a few metadata chunks, so a file may hold a base allowance of chunks and
one more per few kilobytes; counting stops at the allowance, so the check itself is cheap.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BASE_CHUNKS = 1024
BYTES_PER_EXTRA_CHUNK = 4096


class TooManyChunks(ValueError):
    pass


def check_png_chunks(data: bytes) -> None:
    """Raise TooManyChunks for a PNG with more chunks than its size allows; other data passes."""
    if not data.startswith(PNG_SIGNATURE):
        return
    allowed = BASE_CHUNKS + len(data) // BYTES_PER_EXTRA_CHUNK
    position, count = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        count += 1
        if count > allowed:
            raise TooManyChunks(f"PNG has more than {allowed} chunks for its {len(data)} bytes")
        (length,) = struct.unpack_from(">I", data, position)
        if data[position + 4 : position + 8] == b"IEND":
            return
        position += 12 + length
