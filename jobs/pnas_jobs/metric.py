"""Top-k accuracy exactly as the seed's vision_metric_ImageNet.py computes and writes it.

The seed sorts each score row with `np.argsort(-scores)` and checks whether the label is among the
first k; with 1001 scores (a background class first) the label moves up by one. Here the rank of
the label is the count of strictly larger scores, which is the same answer without sorting; rows
where another class ties with the label's score go through the seed's very argsort so that even
ties are broken as the seed breaks them.
"""
from __future__ import annotations

import json

import numpy as np

TOPN = 5
TITLE = "Overall statistical evaluation"


class LabelsError(ValueError):
    pass


def image_name(path: str) -> str:
    """The name labels and results are matched by: the base name up to its first dot (the seed's rule)."""
    return path.rsplit("/", 1)[-1].split(".")[0]


def parse_labels(text: str, source: str = "labels") -> dict[str, int]:
    """`<file name> <class>` per line -> {name without extension: class}, as the seed keys them."""
    labels: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise LabelsError(f"{source}:{number}: expected '<file name> <class>', got {line.strip()!r}")
        labels[image_name(parts[0])] = int(parts[1])
    if not labels:
        raise LabelsError(f"{source}: no labels found (expected '<file name> <class>' per line)")
    return labels


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
