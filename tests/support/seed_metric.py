"""The seed's vision_metric_ImageNet.py, re-implemented file by file as the guide describes it:
the reference the fast aggregator must match byte for byte (including its tie breaking)."""

from __future__ import annotations

import json
import os

import numpy as np


def seed_labels(path) -> dict[str, str]:
    table = {}
    with open(path) as handle:
        for line in handle.readlines():
            parts = line.strip().split(" ")
            table[parts[0].split(".")[0]] = parts[1]
    return table


def seed_score(result_dir, labels_path, topn: int = 5) -> str:
    labels = seed_labels(labels_path)
    count, n_labels, res_cnt = 0, 0, 0
    count_hit = np.zeros(topn)
    for file_name in os.listdir(result_dir):
        count += 1
        stem = file_name.split(".")[0]
        image = stem[: stem.rfind("_")]
        with open(os.path.join(result_dir, file_name)) as handle:
            line = handle.readline()
        values = line.strip().split(" ")
        n_labels = len(values)
        prediction = np.zeros(n_labels, dtype=np.float32)
        for i, value in enumerate(values):
            prediction[i] = np.float32(value)
        order = np.argsort(-prediction)
        real = int(labels[image]) + (1 if n_labels == 1001 else 0)
        res_cnt = min(len(order), topn)
        for i in range(res_cnt):
            if str(real) == str(order[i]):
                count_hit[i] += 1
                break
    table = {"title": "Overall statistical evaluation", "value": []}
    table["value"].extend(
        [{"key": "Number of images", "value": str(count)}, {"key": "Number of classes", "value": str(n_labels)}]
    )
    accuracy = np.cumsum(count_hit) / count if count else 0
    for i in range(res_cnt):
        table["value"].append(
            {"key": "Top" + str(i + 1) + " accuracy", "value": str(round(accuracy[i] * 100, 2)) + "%"}
        )
    return json.dumps(table)
