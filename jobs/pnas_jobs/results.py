"""Inference results in ais_bench's TXT layout, and reading them back fast.

ais_bench `--outfmt TXT` writes one file per input, `<input stem>_<output index>.txt`, holding the
output reshaped to (-1, last dim), each row written as `np.savetxt(f, np.c_[row], fmt="%f",
newline=" ")` followed by b"\n" (ais_bench/infer/utils.py save_data_to_files): every value is
followed by a space and a row ends " \n". pnas-eval writes the same bytes, grouped in one tar per
shard so a shard's results appear in storage at once; `tar xf` gives back the exact ais_bench folder.

Formatting and parsing 1000 numbers an image in plain Python took about 200 and 360 us an image
(17 s to score 50,000 results; benchmarks/results.md), so both directions have a vectorised path
for the fixed `%f` layout (exactly six decimals), byte-identical and bit-identical to the plain
Python one, which stays as the fallback for anything else (nan, inf, |x| >= 1e8, float64 rows,
foreign text).
"""

from __future__ import annotations

import mmap
import os
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pnas_jobs import metric

TXT_SUFFIX = "_0.txt"

_U = np.uint64
_ASCII_ZEROS = _U(0x3030303030303030)  # eight '0' characters in one 64-bit word
_MAX_INT_DIGITS = 8  # the fast paths handle |value| < 1e8; larger values take the plain path
# values per vectorised block, so that its arrays stay in the CPU cache (threads did not help here)
_BLOCK_VALUES = 1 << 15  # parsing
_FORMAT_VALUES = 1 << 12  # formatting


def format_scores(row: np.ndarray) -> bytes:
    """One ais_bench TXT file of one output row: `%f` values, each followed by a space, then a newline."""
    row = np.asarray(row)
    if row.dtype == np.float32 and row.ndim == 1 and len(row):
        return format_rows(row[None, :])[0]
    return _format_plain(row)


def _format_plain(row: np.ndarray) -> bytes:
    # ais_bench's get_ndata_fmt: "%f" for float16/32/64, "%d" for anything else
    fmt = "%f " if np.asarray(row).dtype.kind == "f" else "%d "
    return ((fmt * row.shape[-1]) % tuple(row.tolist()) + "\n").encode()


def format_rows(scores: np.ndarray) -> list[bytes]:
    """`format_scores` of each row of a (rows, classes) array, vectorised for float32."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.dtype != np.float32 or scores.size == 0:
        return [_format_plain(row) for row in scores]
    step = max(1, _FORMAT_VALUES // scores.shape[1])
    out: list[bytes] = []
    for start in range(0, len(scores), step):
        block = scores[start : start + step]
        out += _format_fixed6(block) or [_format_plain(row) for row in block]
    return out


def _ascii8(values: np.ndarray) -> np.ndarray:
    """uint64 values below 1e8 -> their 8 ASCII digits (leading zeros), first digit in the lowest byte.

    SWAR with exact multiply-shift divisions: by 10000 for values < 2**32, then by 100 and by 10 in
    each 32- and 16-bit lane.
    """
    high = (values * _U(3518437209)) >> _U(45)
    words = high | ((values - high * _U(10000)) << _U(32))
    hundreds = ((words * _U(5243)) >> _U(19)) & _U(0x0000007F0000007F)
    words = hundreds | ((words - hundreds * _U(100)) << _U(16))
    tens = ((words * _U(103)) >> _U(10)) & _U(0x000F000F000F000F)
    words = tens | ((words - tens * _U(10)) << _U(8))
    return words + _ASCII_ZEROS


_POWERS = np.array([10**k for k in range(1, _MAX_INT_DIGITS)], dtype=np.uint64)


def _format_fixed6(scores: np.ndarray) -> list[bytes] | None:
    """`%f` of a float32 block, or None when a value is not finite or not below 1e8.

    A float32 times 1e6 is exact in float64 (24 + 20 significant bits), so rounding it half to even
    gives exactly the six decimals `%f` prints. Each value's last 8 bytes (its last integer digit,
    the point, six decimals) are one 64-bit word; longer integer parts get a second word, written
    first, whose leading zeros the neighbours' writes then cover. Every value is followed by a space
    and each row's last space by a newline, as ais_bench writes them.
    """
    wide = np.abs(scores.astype(np.float64)).ravel()
    if not (wide < 10.0**_MAX_INT_DIGITS).all():  # also false for nan and inf
        return None
    fixed = np.rint(wide * 1e6)
    integer = np.floor(fixed / 1e6)  # exact: fixed < 1e14
    fraction = (fixed - integer * 1e6).astype(np.uint64)
    integer = integer.astype(np.uint64)
    negative = np.flatnonzero(np.signbit(scores).ravel())
    digits = np.searchsorted(_POWERS, integer, side="right") + 1
    lengths = digits + 8  # digits, point, six decimals, the space after it
    lengths[negative] += 1
    lengths.reshape(scores.shape)[:, -1] += 1  # and the row's newline
    stops = np.cumsum(lengths) + 7  # each value's last byte (after 8 bytes of room for the first value's words)
    row_ends = stops.reshape(scores.shape)[:, -1].copy()  # the newlines
    spaces = stops  # each value's space: before the newline on a row's last value
    spaces.reshape(scores.shape)[:, -1] -= 1
    text = np.zeros(int(row_ends[-1]) + 9, dtype=np.uint8)
    words = np.ndarray((len(text) - 8,), dtype="<u8", buffer=text, strides=(1,))
    upper = (integer * _U(3435973837)) >> _U(35)  # integer // 10
    longer = np.flatnonzero(digits > 1)
    if len(longer):
        words[spaces[longer] - 16] = _ascii8(upper[longer])
    tail = _ascii8((integer - upper * _U(10)) * _U(10_000_000) + fraction)
    tail &= ~_U(0xFF00)
    tail |= _U(ord(".") << 8)
    words[spaces - 8] = tail
    text[spaces] = ord(" ")
    text[row_ends] = ord("\n")
    text[spaces[negative] - 8 - digits[negative]] = ord("-")
    data = text.tobytes()
    starts = [8, *(row_ends[:-1] + 1).tolist()]
    return [data[start : end + 1] for start, end in zip(starts, row_ends.tolist())]


def image_name(file_name: str) -> str:
    """The seed's rule: the file name without extension, cut at its last `_` (the output index)."""
    stem = metric.image_name(file_name)
    return stem[: stem.rfind("_")] if "_" in stem else stem


_TAR_ENCODING = ("utf-8", "surrogateescape")
_SPACE = ord(" ")


def _header_template() -> bytes:
    info = tarfile.TarInfo("x")
    info.mode = 0o644
    return info.tobuf(tarfile.GNU_FORMAT, *_TAR_ENCODING)


class TarWriter:
    """Writes `<name>_0.txt` members to a tar file on disk, byte-identical to `tarfile` (GNU format).

    Headers of short names are patched from one template (tarfile takes ~30 us to build each);
    names over 100 bytes get tarfile's own GNU long-name header.
    """

    _TEMPLATE = _header_template()

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.offset = 0
        self.count = 0

    def add(self, name: str, scores: np.ndarray) -> None:
        self._member(name + TXT_SUFFIX, format_scores(scores))

    def add_rows(self, names: list[str], scores: np.ndarray) -> None:
        """One member per row: `names[i]_0.txt` holds `scores[i]`."""
        for name, data in zip(names, format_rows(scores)):
            self._member(name + TXT_SUFFIX, data)

    def _member(self, member: str, data: bytes) -> None:
        encoded = member.encode(*_TAR_ENCODING)
        if len(encoded) <= tarfile.LENGTH_NAME:
            header = bytearray(self._TEMPLATE)
            header[0:100] = encoded.ljust(100, b"\0")
            header[124:136] = b"%011o\0" % len(data)
            header[148:156] = b"        "
            header[148:155] = b"%06o\0" % sum(header)
        else:
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            header = info.tobuf(tarfile.GNU_FORMAT, *_TAR_ENCODING)
        padding = -len(data) % tarfile.BLOCKSIZE
        self.file.write(header)
        self.file.write(data)
        self.file.write(b"\0" * padding)
        self.offset += len(header) + len(data) + padding
        self.count += 1

    def close(self) -> None:
        """The end-of-archive blocks and record padding, as tarfile.close writes them."""
        if self.file.closed:
            return
        end = tarfile.BLOCKSIZE * 2
        end += -(self.offset + end) % tarfile.RECORDSIZE
        self.file.write(b"\0" * end)
        self.file.close()


def first_lines_from_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member file name, its first line without the trailing space) for each TXT member of a shard's tar."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            members = _plain_members(data) if size else None
            if members is None:  # anything but plain files in GNU/ustar headers (or nothing): the tarfile module
                yield from _first_lines_tarfile(path)
                return
            for name, start, stop in members:
                if name.endswith(".txt"):
                    end = data.find(b"\n", start, stop)
                    if end < 0:
                        end = stop
                    if end > start and data[end - 1] == _SPACE:  # ais_bench ends a row with " \n"
                        end -= 1
                    yield name.rsplit("/", 1)[-1], data[start:end]
        finally:
            if size:
                data.close()


def _plain_members(data) -> list[tuple[str, int, int]] | None:
    """(name, data start, data end) of each regular file, or None when the archive needs tarfile:
    long names, pax headers, links, base-256 sizes, a bad checksum, truncation."""
    members, offsets, offset, block = [], [], 0, tarfile.BLOCKSIZE
    magics = (tarfile.GNU_MAGIC, tarfile.POSIX_MAGIC)
    while offset < len(data):
        if offset + block > len(data):
            return None
        if data[offset] == 0 and not data[offset : offset + block].strip(b"\0"):
            break  # end-of-archive block
        kind, magic = data[offset + 156], data[offset + 257 : offset + 265]
        if kind not in b"05\0" or magic not in magics or (magic == tarfile.POSIX_MAGIC and data[offset + 345]):
            return None  # not a plain file or folder; or a ustar name prefix
        size_field = data[offset + 124 : offset + 136]
        if size_field[0] & 0x80:
            return None  # base-256 size
        try:
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
        start = offset + block
        if start + size > len(data):
            return None
        name = data[offset : offset + 100].split(b"\0", 1)[0].decode(*_TAR_ENCODING)
        if kind == ord("5") or name.endswith("/"):
            if size:
                return None
        else:
            members.append((name, start, start + size))
        offsets.append(offset)
        offset = start + size + (-size % block)
    return members if _checksums_match(data, offsets) else None


def _checksums_match(data, offsets: list[int]) -> bool:
    """Every header's stored checksum equals the unsigned sum of its bytes (the checksum field as spaces)."""
    if not offsets:
        return True
    headers = np.frombuffer(data, dtype=np.uint8)[np.asarray(offsets)[:, None] + np.arange(tarfile.BLOCKSIZE)]
    sums = headers.sum(axis=1, dtype=np.int64) - headers[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * ord(" ")
    stored = []
    for offset in offsets:
        field = data[offset + 148 : offset + 156].split(b"\0", 1)[0].strip()
        try:
            stored.append(int(field or b"0", 8))
        except ValueError:
            return False
    return bool((sums == np.asarray(stored)).all())


def _first_lines_tarfile(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                data = tar.extractfile(member).read()
                yield member.name.rsplit("/", 1)[-1], data.split(b"\n", 1)[0].rstrip(b" ")


def first_lines_from_dir(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(file name, first line) for each TXT file of an ais_bench output folder."""
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name.endswith(".txt"):
            with open(path, "rb") as handle:
                yield path.name, handle.readline().rstrip(b"\n").rstrip(b" ")


class ScoreFormatError(ValueError):
    pass


def parse_first_lines(lines: Iterable[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
    """File names and an (N, classes) float32 matrix.

    Like the seed, each file's first line counts and its values are read as float32; every file
    must have the same number of values.
    """
    names, rows = [], []
    for name, line in lines:
        names.append(name)
        rows.append(line.strip())
    if not names:
        return [], np.zeros((0, 0), dtype=np.float32)
    return names, parse_rows(rows, names)


def parse_rows(rows: list[bytes], names: list[str] | None = None) -> np.ndarray:
    """Rows of space-separated numbers -> (rows, values per row) float32, each value as np.float32(text).

    Blocks in ais_bench's `%f` layout take the vectorised parser, which also checks that every row
    has the first row's number of values; any other block makes every row's count checked (a
    ScoreFormatError names the first file that differs) and goes through numpy's generic parser.
    """
    width = rows[0].count(b" ") + 1 if rows and rows[0] else 0
    out = np.empty((len(rows), width), dtype=np.float32)
    step = max(1, _BLOCK_VALUES // max(width, 1))
    others = []
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        values = _parse_fixed6(block, width) if width else None
        if values is None:
            others.append(start)
        else:
            out[start : start + len(block)] = values
    if others:
        for number, row in enumerate(rows):
            count = row.count(b" ") + 1 if row else 0
            if count != width or count == 0:
                name = names[number] if names else f"row {number + 1}"
                raise ScoreFormatError(f"{name}: {count} scores where the first file had {width}")
        for start in others:
            block = rows[start : start + step]
            out[start : start + len(block)] = np.array(b" ".join(block).split(), dtype=np.float32).reshape(-1, width)
    return out


def _swar8(words: np.ndarray) -> np.ndarray:
    """Eight ASCII digits per uint64 (first digit in the lowest byte) -> their value (SWAR)."""
    words -= _ASCII_ZEROS
    words = (words * _U(10) + (words >> _U(8))) & _U(0x00FF00FF00FF00FF)
    words = (words * _U(100) + (words >> _U(16))) & _U(0x0000FFFF0000FFFF)
    return (words * _U(10000) + (words >> _U(32))) & _U(0x00000000FFFFFFFF)


def _gather8(words: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The 8 bytes starting at each byte position, as little-endian uint64, from aligned words."""
    shift = (positions & 7).astype(np.uint64) << _U(3)
    index = positions >> 3
    return (words[index] >> shift) | (words[index + 1] << (_U(64) - shift))  # numpy: x << 64 == 0


_PAD = 16  # leading spaces, so that every value has 16 bytes before its end
_LAYOUT = b"0123456789.- \n"


def _parse_fixed6(rows: list[bytes], width: int) -> np.ndarray | None:
    """Rows of `width` values `[-]<1..8 digits>.<6 digits>` separated by single spaces, else None.

    value = (integer digits * 1e6 + decimals) / 1e6 in float64 is the correctly rounded double of
    the text, as strtod gives, and its float32 cast is what np.float32(text) gives. The last integer
    digit and the six decimals are one 64-bit word ending at each value's end; the other integer
    digits, when there are any, a second word.
    """
    text = b" " * _PAD + b"\n".join(rows) + b"\n"
    text += b" " * (16 - len(text) % 8)  # whole 64-bit words, and one to spare
    if text.translate(None, _LAYOUT):
        return None  # other characters
    raw = np.frombuffer(text, dtype=np.uint8)
    count = len(rows) * width
    ends = np.flatnonzero(raw <= ord(" "))[_PAD : _PAD + count]  # spaces and newlines end values
    if len(ends) != count or not (raw[ends[width - 1 :: width]] == ord("\n")).all():
        return None  # not `width` values on every row
    starts = np.empty_like(ends)
    starts[0], starts[1:] = _PAD, ends[:-1] + 1
    negative = raw[starts] == ord("-")
    points = ends - 7
    digits = points - starts - negative
    if (
        np.count_nonzero(raw == ord(".")) != count
        or np.count_nonzero(raw == ord("-")) != np.count_nonzero(negative)
        or np.count_nonzero(raw == ord("\n")) != len(rows)
        or not (raw[points] == ord(".")).all()
        or digits.min() < 1
        or digits.max() > _MAX_INT_DIGITS
    ):
        return None  # a point elsewhere, a sign inside a value, an empty value, too many digits
    words = np.frombuffer(text, dtype="<u8")
    tail = _gather8(words, ends - 8)  # last integer digit, '.', six decimals
    tail = ((tail & _U(0xFF)) << _U(8)) | (tail & _U(0xFFFFFFFFFFFF0000)) | _U(ord("0"))  # "0", digit, decimals
    fixed = _swar8(tail)  # last integer digit * 1e6 + decimals
    longer = np.flatnonzero(digits > 1)
    if len(longer):
        upper = _gather8(words, points[longer] - 9)  # the integer digits before the last, right-aligned
        low = (_U(1) << (_U(8) * (_U(9) - digits[longer].astype(np.uint64)))) - _U(1)
        upper = (upper & ~low) | (_ASCII_ZEROS & low)  # bytes before the digits become '0'
        fixed[longer] += _swar8(upper) * _U(10_000_000)
    values = fixed.astype(np.float64)
    values /= 1e6
    out = values.astype(np.float32)
    out.view(np.uint32)[...] |= negative.astype(np.uint32) << np.uint32(31)  # -0.000000 is -0.0
    return out.reshape(len(rows), width)
