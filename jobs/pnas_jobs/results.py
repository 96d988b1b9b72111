"""Inference results in ais_bench's TXT layout, and reading them back fast.

ais_bench `--outfmt TXT` writes one file per input, `<input stem>_<output index>.txt`, holding the
output reshaped to (-1, last dim) with each row as space-separated `%f` values and a newline
(numpy.savetxt with fmt="%f"). pnas-eval writes the same files, grouped in one tar per shard so a
shard's results appear in storage at once; `tar xf` gives back the exact ais_bench folder.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

TXT_SUFFIX = "_0.txt"


def format_scores(row: np.ndarray) -> bytes:
    """One ais_bench TXT file: a single line of `%f` values."""
    return (" ".join(["%f"] * row.shape[-1]) % tuple(row.tolist()) + "\n").encode()


def image_name(file_name: str) -> str:
    """The seed's rule: the file name without extension, cut at its last `_` (the output index)."""
    stem = file_name.rsplit("/", 1)[-1].split(".")[0]
    return stem[: stem.rfind("_")] if "_" in stem else stem


class TarWriter:
    """Appends `<name>_0.txt` members to a tar file on disk."""

    def __init__(self, path: Path):
        self.tar = tarfile.open(path, "w", format=tarfile.GNU_FORMAT)
        self.count = 0

    def add(self, name: str, scores: np.ndarray) -> None:
        data = format_scores(scores)
        info = tarfile.TarInfo(name + TXT_SUFFIX)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self.tar.close()


def first_lines_from_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member file name, its first line) for each TXT member of a shard's tar."""
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                data = tar.extractfile(member).read()
                yield member.name.rsplit("/", 1)[-1], data.split(b"\n", 1)[0]


def first_lines_from_dir(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(file name, first line) for each TXT file of an ais_bench output folder."""
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name.endswith(".txt"):
            with open(path, "rb") as handle:
                yield path.name, handle.readline().rstrip(b"\n")


class ScoreFormatError(ValueError):
    pass


def parse_first_lines(lines: Iterable[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
    """File names and an (N, classes) float32 matrix, parsed in one pass over all the text.

    Like the seed, each file's first line counts and its values are read as float32; every file
    must have the same number of values.
    """
    names, chunks = [], []
    width = None
    for name, line in lines:
        line = line.strip()
        count = line.count(b" ") + 1 if line else 0
        if width is None:
            width = count
        if count != width or count == 0:
            raise ScoreFormatError(f"{name}: {count} scores where the first file had {width}")
        names.append(name)
        chunks.append(line)
    if not names:
        return [], np.zeros((0, 0), dtype=np.float32)
    flat = np.array(b" ".join(chunks).split(), dtype=np.float32)
    return names, flat.reshape(len(names), width)
