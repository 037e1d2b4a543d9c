"""Reading annotation tables as text: file checks, decoding, rows, and numbers in ASCII digits.

Shared by the Raven and Audacity readers, so both accept the same files and
fail with the same :class:`AnnotationTableError` messages.
"""
from __future__ import annotations

import codecs
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.annotations._common import AnnotationTableError

# Byte-order marks, longest first (the UTF-32 LE mark begins with the UTF-16 LE one),
# with the codec for the text after the mark.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
# Control characters that never appear in a text table (tab, line feed, carriage return,
# vertical tab and form feed excepted).
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f]")

#: A number as Raven, Audacity and spreadsheets write it: ASCII digits, an optional
#: sign, ``.`` as the decimal mark, an optional exponent; or inf/nan (rejected later
#: with a clearer message than "not a number"). ``float()`` alone would also take
#: Arabic-Indic or full-width digits and ``1_000``.
NUMBER = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
    flags=re.IGNORECASE | re.ASCII,
)
_INTEGER = re.compile(r"[+-]?[0-9]+", flags=re.ASCII)

# Raven and Audacity end lines with LF or CRLF; old Mac exports with CR.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_table_text(path) -> str:
    """Text of a table file, after checking that it is a readable regular file.

    Pipes, sockets and devices are refused rather than read (reading one can
    block forever). Decoding: see :func:`decode_table_bytes`.

    Raises
    ------
    AnnotationTableError
        Missing, a folder, not a regular file, unreadable, or not text.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AnnotationTableError(path, "file does not exist") from None
    except PermissionError:
        raise AnnotationTableError(path, "permission denied (cannot look up the file)") from None
    except OSError as err:
        raise AnnotationTableError(path, f"cannot be read: {err.strerror or err}") from None
    except ValueError as err:  # e.g. a zero byte in the name
        raise AnnotationTableError(path, f"not a usable file name ({err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AnnotationTableError(path, "is a folder, not an annotation table")
    if not stat.S_ISREG(info.st_mode):
        raise AnnotationTableError(path, "is not a regular file (a pipe, socket or device); not read")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise AnnotationTableError(path, "permission denied (cannot read the file)") from None
    except OSError as err:
        raise AnnotationTableError(path, f"cannot be read: {err.strerror or err}") from None
    return decode_table_bytes(raw, path)


def _line_of_byte(raw: bytes, position: int, encoding: str) -> int:
    """1-based line number of byte ``position`` in ``raw`` (for decoding errors)."""
    return len(_LINE_BREAK.findall(codecs.decode(raw[:position], encoding, errors="replace"))) + 1


def _utf16_without_bom(raw: bytes) -> str | None:
    """The text of ``raw`` if it is mostly-ASCII UTF-16 without a byte-order mark, else None.

    In such text every other byte is zero; in UTF-8 or Windows-1252 text no byte is.
    """
    if len(raw) < 2 or len(raw) % 2:
        return None
    even, odd = raw[0::2], raw[1::2]
    half = len(raw) // 2
    if odd.count(0) >= 0.5 * half and even.count(0) == 0:
        codec = "utf-16-le"
    elif even.count(0) >= 0.5 * half and odd.count(0) == 0:
        codec = "utf-16-be"
    else:
        return None
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    return None if _BINARY.search(text) else text


def decode_table_bytes(raw: bytes, path) -> str:
    """Decode a table: by its byte-order mark (UTF-8, UTF-16, UTF-32), else UTF-8, else Windows-1252.

    UTF-16 without a byte-order mark is recognised by its zero bytes. Other
    bytes with zeros are refused as binary. Windows-1252 (falling back to
    Latin-1 for its five unassigned bytes) decodes any byte string, so it comes last.

    Raises
    ------
    AnnotationTableError
        A byte-order mark followed by invalid text, or a binary file.
    """
    for bom, codec, name in _BOMS:
        if raw.startswith(bom):
            body = raw[len(bom):]
            try:
                return body.decode(codec)
            except UnicodeDecodeError as err:
                raise AnnotationTableError(
                    path, f"starts with a {name} byte-order mark but is not valid {name} text ({err.reason})",
                    line=_line_of_byte(body, err.start, codec),
                ) from None
    if b"\x00" in raw:
        text = _utf16_without_bom(raw)
        if text is None:
            raise AnnotationTableError(path, "contains zero bytes: a binary file, not a text table",
                                       line=_line_of_byte(raw, raw.index(b"\x00"), "latin-1"))
        return text
    for codec in ("utf-8", "cp1252"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def split_rows(text: str) -> list[tuple[int, list[str]]]:
    """Tab-separated rows as ``(line number, cells)``; blank lines are left out.

    Raven never quotes cells, so quote characters are data. Lines end with LF,
    CRLF or CR; other Unicode line separators stay inside cells.
    """
    return [(number, line.split("\t")) for number, line in enumerate(_LINE_BREAK.split(text), start=1)
            if line.strip()]


def parse_number(text: str) -> float:
    """One cell as a float; empty is NaN.

    Raises
    ------
    ValueError
        ``text`` is not a number in ASCII digits (see :data:`NUMBER`).
    """
    text = text.strip()
    if text == "":
        return np.nan
    if NUMBER.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def parse_numbers(cells) -> tuple[np.ndarray, np.ndarray]:
    """Stripped text cells (any sequence of str) as floats.

    Returns
    -------
    values : numpy.ndarray of float
        NaN for empty cells and for cells that are not numbers.
    bad : numpy.ndarray of bool
        True where a non-empty cell is not a number in ASCII digits.
    """
    match = NUMBER.fullmatch
    cells = ["" if c is None else c for c in cells]
    ok = np.array([c != "" and match(c) is not None for c in cells], dtype=bool)
    bad = np.array([c != "" for c in cells], dtype=bool) & ~ok
    values = np.full(len(cells), np.nan)
    if ok.any():
        values[ok] = np.array([c for c, good in zip(cells, ok) if good], dtype=float)
    return values, bad


def maybe_numeric(series: pd.Series) -> pd.Series:
    """A text column as integers or floats when every non-empty cell is one (ASCII digits only).

    Integers stay integers only when no cell is empty; ``"1.0"`` stays a float.
    """
    present = [str(v) for v in series.dropna()]
    if not present or not all(NUMBER.fullmatch(v) for v in present):
        return series
    if len(present) == len(series) and all(_INTEGER.fullmatch(v) for v in present):
        try:
            return pd.Series(np.array(present, dtype=np.int64), index=series.index, name=series.name)
        except OverflowError:  # beyond 64 bits: keep as float
            pass
    return series.astype(float)
