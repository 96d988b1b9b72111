"""The results fast paths (vectorised `%f` formatting and parsing, the tar writer and reader) give
exactly what ais_bench writes and numpy parses, byte for byte and bit for bit, and fall back for
anything else. The reference bytes come from the ais_bench stand-in's save_data_to_files, which makes
ais_bench's own np.savetxt calls (tests/support/fake_ais_bench/ais_bench/infer/utils.py)."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile

import numpy as np
import pytest

from pnas_jobs import results
from support.fake_ais_bench.ais_bench.infer.utils import save_data_to_files


def _values(count: int, seed: int = 0) -> np.ndarray:
    """float32 values of every magnitude below 1e8, halfway cases of the sixth decimal, signed zeros."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[np.isfinite(bits) & (np.abs(bits) < 1e8)]
    ties = np.arange(1, 5001, dtype=np.float32) / np.float32(128)  # x * 1e6 ends in .5 exactly
    special = np.array([0.0, -0.0, 1e-7, -1e-7, 5e-7, -5e-7, 0.9999995, 9.9999999, 99999992.0, -99999992.0], np.float32)
    logits = (rng.standard_normal(count) * 4).astype(np.float32)
    values = np.concatenate([special, ties, -ties, bits, logits])
    return values[: len(values) // 100 * 100].reshape(-1, 100)


def _ais_bench(row) -> bytes:
    """The TXT file ais_bench writes for one output row."""
    handle, path = tempfile.mkstemp(suffix=".txt")
    os.close(handle)
    try:
        save_data_to_files(path, np.asarray(row))
        with open(path, "rb") as written:
            return written.read()
    finally:
        os.unlink(path)


def _plain(row) -> bytes:
    """The same bytes in plain Python, for the many rows of the bit-level tests."""
    return "".join("%f " % v for v in row.tolist()).encode() + b"\n"


def test_the_layout_is_what_ais_bench_writes():
    assert _ais_bench(np.array([1.5, -2.25e-7, 3], dtype=np.float32)) == b"1.500000 -0.000000 3.000000 \n"
    rows = _values(5_000)
    assert [_ais_bench(row) for row in rows] == [_plain(row) for row in rows] == results.format_rows(rows)


def test_vectorised_formatting_is_percent_f_to_the_byte():
    rows = _values(200_000)
    assert results._format_fixed6(rows[:40]) is not None  # the vectorised path, not the fallback
    assert results.format_rows(rows) == [_plain(row) for row in rows]
    assert results.format_scores(rows[3]) == _ais_bench(rows[3])


def test_formatting_falls_back_where_percent_f_is_not_fixed_width():
    odd = np.array([[np.nan, np.inf, -np.inf, 1e8, -3e12, 0.5]], dtype=np.float32)
    assert results.format_rows(odd) == [_ais_bench(odd[0])]
    wide = np.array([2.5e-6, 1 / 3, -7.0])  # float64: x * 1e6 is not exact, Python's %f decides
    assert results.format_scores(wide) == _ais_bench(wide)
    assert (
        results.format_scores(np.array([3, -1, 7], dtype=np.int64)) == _ais_bench(np.array([3, -1, 7])) == b"3 -1 7 \n"
    )


def test_vectorised_parsing_is_np_float32_to_the_bit():
    rows = _values(200_000, seed=1)
    lines = [results.format_rows(rows[i : i + 1])[0].rstrip(b" \n") for i in range(len(rows))]
    assert results._parse_fixed6(lines[:40], rows.shape[1]) is not None  # the vectorised path, not the fallback
    got = results.parse_rows(lines)
    reference = np.array([[np.float32(v) for v in line.decode().split(" ")] for line in lines], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), reference.view(np.uint32))  # -0.0 and ties included


@pytest.mark.parametrize(
    "line",
    [
        b"1.5 nan inf -inf",
        b"1e-05 2.5 3 -4",
        b"0.1234567 1.0 2.00 3.000000",
        b"+1.000000 2.000000 3.000000 4.000000",
        b"123456789.000000 1.000000 2.000000 3.000000",
    ],
)
def test_parsing_other_text_takes_the_generic_parser(line):
    lines = [line, b"1.000000 2.000000 3.000000 4.000000"]
    expected = np.array(b" ".join(lines).split(), dtype=np.float32).reshape(2, 4)
    got = results.parse_rows(lines)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("line", [b"1.000000 2.000000 3.000000", b"1.000000\t2.000000 3.000000 4.000000", b""])
def test_a_row_of_another_width_is_named(line):
    rows = [(f"img{i}_0.txt", b"1.000000 2.000000 3.000000 4.000000") for i in range(40)]
    rows[23] = ("img23_0.txt", line)
    with pytest.raises(results.ScoreFormatError, match="img23_0.txt: .* scores where the first file had 4"):
        results.parse_first_lines(rows)


def _tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_tar_writer_writes_what_tarfile_writes(tmp_path):
    rows = _values(2_000)[:12]
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(11)] + ["x" * 120]  # the last needs a GNU long name
    writer = results.TarWriter(tmp_path / "ours.tar")
    writer.add_rows(names[:6], rows[:6])
    for name, row in zip(names[6:], rows[6:]):
        writer.add(name, row)
    writer.close()
    expected = _tarfile_bytes([(n + results.TXT_SUFFIX, _plain(r)) for n, r in zip(names, rows)])
    assert (tmp_path / "ours.tar").read_bytes() == expected


def test_tar_reader_matches_tarfile_and_falls_back_for_other_archives(tmp_path):
    rows = _values(2_000)[:5]
    plain = tmp_path / "plain.tar"
    writer = results.TarWriter(plain)
    writer.add_rows([f"img{i}" for i in range(5)], rows)
    writer.close()
    expected = [(f"img{i}_0.txt", _plain(r).rstrip(b" \n")) for i, r in enumerate(rows)]
    assert list(results.first_lines_from_tar(plain)) == expected

    # pax headers, a long name, a folder, a symlink and a non-TXT member: read through tarfile
    mixed = tmp_path / "mixed.tar"
    with tarfile.open(mixed, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("dir/" + "y" * 150 + "_0.txt", b"1.000000 2.000000\nsecond line\n"), ("notes.md", b"hi")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link_0.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "notes.md"
        tar.addfile(link)
    assert list(results.first_lines_from_tar(mixed)) == [("y" * 150 + "_0.txt", b"1.000000 2.000000")]

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(plain.read_bytes()[:700])
    with pytest.raises(tarfile.ReadError):
        list(results.first_lines_from_tar(truncated))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(tarfile.ReadError):
        list(results.first_lines_from_tar(empty))
