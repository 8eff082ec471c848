"""The text a PDF drawn by fpdf2 with the core fonts shows, without a PDF library: its
content streams inflated, the string operands of ``Tj`` in drawing order, one per line."""

from __future__ import annotations

import re
import zlib

_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_SHOWN = re.compile(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i : i + 1]
        if byte == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            if nxt.isdigit():
                octal = re.match(rb"[0-7]{1,3}", raw[i + 1 : i + 4])
                assert octal is not None
                out.append(int(octal.group(), 8))
                i += 1 + len(octal.group())
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += byte
        i += 1
    return out.decode("latin-1")


def pdf_lines(data: bytes) -> list[str]:
    assert data.startswith(b"%PDF-")
    shown: list[str] = []
    for stream in _STREAM.findall(data):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            content = stream
        shown += [_unescape(s) for s in _SHOWN.findall(content)]
    return shown


def pdf_text(data: bytes) -> str:
    """Everything shown, one drawn string per line."""
    return "\n".join(pdf_lines(data))


def pdf_words(data: bytes) -> str:
    """Everything shown as one line of words: a wrapped sentence reads whole again."""
    return " ".join(" ".join(pdf_lines(data)).split())


def page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", data))
