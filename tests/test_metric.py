"""Top-k accuracy and the seed's JSON, on hand-made score files with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from pnas_jobs import metric, results
from support.seed_metric import seed_score


def write_folder(folder, rows: dict[str, np.ndarray], labels: dict[str, int]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, row in rows.items():
        (folder / f"{name}_0.txt").write_bytes(results.format_scores(np.asarray(row, dtype=np.float32)))
    labels_path = folder.parent / "val_label.txt"
    labels_path.write_text("".join(f"{n}.JPEG {c}\n" for n, c in labels.items()))
    return labels_path


def aggregate(folder, labels_path, tmp_path) -> str:
    out = tmp_path / "out.json"
    result = run_cli("aggregate", "--results", str(folder), "--labels", str(labels_path), "--output", str(out))
    assert result.returncode == 0, result.stderr
    return out.read_text()


def test_known_answers(tmp_path):
    # 8 classes. Label ranks: a 1st, b 2nd, c 3rd, d 5th, e 6th (missed) -> top1 20%, top2 40%, top3 60%, top5 80%
    rows = {
        "a": [0, 9, 1, 2, 3, 4, 5, 6],
        "b": [9, 8, 1, 2, 3, 4, 5, 6],
        "c": [7, 9, 8, 1, 2, 3, 4, 5],
        "d": [9, 8, 7, 6, 5, 1, 2, 3],
        "e": [9, 8, 7, 6, 5, 4, 3, 2],
    }
    labels = {"a": 1, "b": 1, "c": 0, "d": 4, "e": 7}
    labels_path = write_folder(tmp_path / "res", rows, labels)
    got = json.loads(aggregate(tmp_path / "res", labels_path, tmp_path))
    assert got == {
        "title": "Overall statistical evaluation",
        "value": [
            {"key": "Number of images", "value": "5"},
            {"key": "Number of classes", "value": "8"},
            {"key": "Top1 accuracy", "value": "20.0%"},
            {"key": "Top2 accuracy", "value": "40.0%"},
            {"key": "Top3 accuracy", "value": "60.0%"},
            {"key": "Top4 accuracy", "value": "60.0%"},
            {"key": "Top5 accuracy", "value": "80.0%"},
        ],
    }


def test_1001_scores_shift_the_label_by_one(tmp_path):
    rows = {"x": np.eye(1001)[4] * 5, "y": np.eye(1001)[11] * 5}  # background first: class 3 is column 4
    labels_path = write_folder(tmp_path / "res", rows, {"x": 3, "y": 3})
    text = aggregate(tmp_path / "res", labels_path, tmp_path)
    assert '{"key": "Number of classes", "value": "1001"}' in text
    assert '{"key": "Top1 accuracy", "value": "50.0%"}' in text


def test_formatting_is_the_seeds_to_the_byte():
    table = metric.accuracy_table(3, 1000, np.array([1, 2, 2, 2, 3]))
    assert metric.seed_json(table) == (
        '{"title": "Overall statistical evaluation", "value": [{"key": "Number of images", "value": "3"}, '
        '{"key": "Number of classes", "value": "1000"}, {"key": "Top1 accuracy", "value": "33.33%"}, '
        '{"key": "Top2 accuracy", "value": "66.67%"}, {"key": "Top3 accuracy", "value": "66.67%"}, '
        '{"key": "Top4 accuracy", "value": "66.67%"}, {"key": "Top5 accuracy", "value": "100.0%"}]}'
    )


@pytest.mark.parametrize("classes, tie_rate", [(1000, 0.0), (1000, 0.3), (1001, 0.2), (12, 0.5), (3, 0.0)])
def test_matches_the_seed_script_on_random_results_with_ties(tmp_path, classes, tie_rate):
    rng = np.random.default_rng(classes)
    rows, labels = {}, {}
    for i in range(300):
        row = np.round(rng.normal(0, 2, classes), 6)
        label = int(rng.integers(0, min(classes, 1000)))
        column = label + (1 if classes == 1001 else 0)
        if rng.random() < tie_rate:  # the label ties with one or more near-top classes
            top = np.argsort(-row)[: int(rng.integers(1, 4))]
            row[top] = row[column] = row.max()
        rows[f"ILSVRC2012_val_{i:08d}"] = row
        labels[f"ILSVRC2012_val_{i:08d}"] = label
    labels_path = write_folder(tmp_path / "res", rows, labels)
    assert aggregate(tmp_path / "res", labels_path, tmp_path) == seed_score(tmp_path / "res", labels_path)


def test_ranks_count_strictly_higher_scores():
    scores = np.array([[0.1, 0.5, 0.3], [0.9, 0.1, 0.2]], dtype=np.float32)
    assert metric.ranks(scores, np.array([2, 0])).tolist() == [1, 0]


def test_parse_labels_rejects_garbage():
    with pytest.raises(metric.LabelsError, match="val_label.txt:2"):
        metric.parse_labels("a.JPEG 1\nnot a label line\n", "val_label.txt")
    assert metric.parse_labels("ILSVRC2012_val_00000001.JPEG 65\n") == {"ILSVRC2012_val_00000001": 65}


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "a.JPEG 1\nb.JPEG 2\na.JPEG 3\n",
            "v.txt:3: a.JPEG gives class 3, but line 1 gave class 1: one line per image",
        ),
        (
            "a.JPEG 1\nb.JPEG 2\na.png 1\n",
            "v.txt:3: a.png repeats line 1 gave class 1",
        ),  # the seed keys names without extension
        (
            "a.JPEG 1\nb.JPEG -1\n",
            "v.txt:2: class -1 of b.JPEG is negative",
        ),  # not the background class of a 1001-class model
        (
            "a.JPEG 1\nb.JPEG \u0663\n",
            "v.txt:2: expected '<file name> <class>'",
        ),  # ARABIC-INDIC DIGIT THREE: int() takes it
        (
            "a.JPEG 1\nb.JPEG \u00b3\n",
            "v.txt:2: expected '<file name> <class>'",
        ),  # SUPERSCRIPT THREE: isdigit(), not int()
    ],
    ids=["conflict", "duplicate", "minus-one", "arabic-indic-digit", "superscript-digit"],
)
def test_ambiguous_labels_are_refused_naming_the_line(text, message):
    with pytest.raises(metric.LabelsError) as caught:
        metric.parse_labels(text, "v.txt")
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_byte_order_mark_does_not_hide_the_first_label():
    labels = metric.parse_labels("\ufeffa.JPEG 1\nb.JPEG 2\n", "v.txt")
    assert labels == {"a": 1, "b": 2} and labels.where("b") == "v.txt:2"


@pytest.mark.parametrize("classes, bad", [(1000, 1000), (1001, 1000), (10, 10)])
def test_classes_outside_the_model_are_named_by_line(classes, bad):
    labels = metric.parse_labels(f"a.JPEG 0\nb.JPEG {bad - 1}\nc.JPEG {bad}\n", "v.txt")
    metric.check_classes(labels, ["a", "b"], classes)
    with pytest.raises(metric.LabelsError, match=f"v.txt:3: class {bad} of c is outside the model's {bad} classes"):
        metric.check_classes(labels, ["a", "b", "c"], classes)


def test_results_with_unknown_images_are_refused(tmp_path):
    labels_path = write_folder(tmp_path / "res", {"known": [1, 2], "stranger": [2, 1]}, {"known": 0})
    out = tmp_path / "out.json"
    result = run_cli(
        "aggregate", "--results", str(tmp_path / "res"), "--labels", str(labels_path), "--output", str(out)
    )
    assert result.returncode == 2 and "1 results have no label" in result.stderr and not out.exists()
