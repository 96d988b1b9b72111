"""Top-k accuracy exactly as the seed's vision_metric_ImageNet.py computes and writes it.

The seed sorts each score row with `np.argsort(-scores)` and checks whether the label is among the
first k; with 1001 scores (a background class first) the label moves up by one. Here the rank of
the label is the count of strictly larger scores, which is the same answer without sorting; rows
where another class ties with the label's score go through the seed's very argsort so that even
ties are broken as the seed breaks them.
"""

from __future__ import annotations

import json
import re

import numpy as np

TOPN = 5
TITLE = "Overall statistical evaluation"


class LabelsError(ValueError):
    pass


def image_name(path: str) -> str:
    """The name labels and results are matched by: the base name up to its first dot (the seed's rule)."""
    return path.rsplit("/", 1)[-1].split(".")[0]


class Labels(dict):
    """{image name: class}, and the line of the labels file each came from (to name it in messages)."""

    def __init__(self, source: str = "labels"):
        super().__init__()
        self.source = source
        self.lines: dict[str, int] = {}
        self.files: set[str] = set()  # the file names as written

    def where(self, name: str) -> str:
        return f"{self.source}:{self.lines[name]}" if name in self.lines else self.source


_CLASS = re.compile(r"-?[0-9]+", re.ASCII)  # int() also takes other scripts' digits; the seed's files hold ASCII


def parse_labels(text: str, source: str = "labels") -> Labels:
    """`<file name> <class>` per line -> {name without extension: class}, as the seed keys them.

    Stricter than the seed, whose last line wins silently: a name given twice, a negative class and
    anything but ASCII digits are errors naming the line. A UTF-8 byte order mark is skipped.
    """
    labels = Labels(source)
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) < 2 or not _CLASS.fullmatch(parts[1]):
            raise LabelsError(f"{source}:{number}: expected '<file name> <class>', got {line.strip()!r}")
        name, label = image_name(parts[0]), int(parts[1])
        if label < 0:
            raise LabelsError(f"{source}:{number}: class {label} of {parts[0]} is negative (classes are 0-based)")
        if name in labels:
            again = "repeats" if labels[name] == label else f"gives class {label}, but"
            raise LabelsError(
                f"{source}:{number}: {parts[0]} {again} line {labels.lines[name]} gave class {labels[name]}: "
                "one line per image"
            )
        labels[name], labels.lines[name] = label, number
        labels.files.add(parts[0].rsplit("/", 1)[-1])
    if not labels:
        raise LabelsError(f"{source}: no labels found (expected '<file name> <class>' per line)")
    return labels


def check_classes(labels: Labels, names, num_classes: int) -> None:
    """Every named image's class is one of the model's (`num_classes` scores, a background class first when 1001)."""
    offset = label_offset(num_classes)
    for name in names:
        label = labels[name]
        if not 0 <= label + offset < num_classes:
            raise LabelsError(
                f"{labels.where(name)}: class {label} of {name} is outside the model's "
                f"{num_classes - offset} classes (0..{num_classes - offset - 1})"
            )


def label_offset(num_classes: int) -> int:
    """1001 scores carry a background class first (old Cadene/TF checkpoints)."""
    return 1 if num_classes == 1001 else 0


def ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based position of each row's label in the seed's `np.argsort(-row)` order."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(len(scores))
    target = scores[rows, labels][:, None]
    higher = (scores > target).sum(axis=1)
    tied = (scores == target).sum(axis=1) > 1
    for row in np.flatnonzero(tied):
        higher[row] = int(np.flatnonzero(np.argsort(-scores[row]) == labels[row])[0])
    return higher


def hits(positions: np.ndarray, topn: int = TOPN) -> np.ndarray:
    """Hits within top-1..top-n (cumulative), from each image's 0-based label rank."""
    positions = np.asarray(positions)
    return np.array([(positions < k).sum() for k in range(1, topn + 1)], dtype=np.int64)


def accuracy_table(count: int, num_classes: int, hits: np.ndarray) -> dict:
    """The seed's JSON document: image count, class count, Top1..Top5 accuracy as `str(round(%, 2)) + '%'`."""
    values = [
        {"key": "Number of images", "value": str(count)},
        {"key": "Number of classes", "value": str(num_classes)},
    ]
    topn = min(num_classes, TOPN)
    if count:
        # numpy float64 arithmetic and numpy's round, as the seed: np.cumsum(count_hit) / count
        accuracy = np.asarray(hits[:topn], dtype=np.float64) / count
        for k in range(topn):
            values.append({"key": f"Top{k + 1} accuracy", "value": str(round(accuracy[k] * 100, 2)) + "%"})
    return {"title": TITLE, "value": values}


def seed_json(table: dict) -> str:
    """Serialised as the seed does: json.dump with default separators, no trailing newline."""
    return json.dumps(table)


def percentages(table: dict) -> dict[str, float]:
    """{'top1': 82.62, ...} from an accuracy table."""
    return {
        f"top{item['key'][3]}": float(item["value"].rstrip("%"))
        for item in table["value"]
        if item["key"].startswith("Top")
    }
