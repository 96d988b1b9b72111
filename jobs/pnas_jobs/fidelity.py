"""Fidelity: how far the deployed backend's outputs are from a reference's on the same images.

The reference (fp32 PyTorch with the run's weights) runs on a sample of whole shards; for each
batch size the deployed backend's scores for those images are compared with the reference's:
top-1 and top-5 agreement, both accuracies on the sample and the drop in points, the largest and
the mean absolute score difference, and the images whose top-1 class differs. Pure numpy.
Which shards form the sample is the planner's choice (plan.sample_shards).
"""

from __future__ import annotations

import numpy as np

from pnas_jobs import metric

DISAGREEMENTS_LISTED = 20


def top5_sets(scores: np.ndarray) -> np.ndarray:
    """The five best classes of each row, sorted (as sets, ties broken as the seed breaks them)."""
    k = min(metric.TOPN, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.sort(order, axis=1)


def _percent(hits: int, count: int) -> float:
    return round(100.0 * hits / count, 2) if count else 0.0


def compare(
    names: list[str],
    deployed: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    max_top1_drop: float,
    batch_size: int,
) -> dict:
    """The fidelity of one batch size: `deployed` and `reference` are the scores of `names`, row for
    row; `labels` their classes (offset already applied)."""
    if deployed.shape != reference.shape:
        raise ValueError(f"deployed scores {deployed.shape} and reference scores {reference.shape} differ in shape")
    count = len(names)
    top1_same = deployed.argmax(axis=1) == reference.argmax(axis=1) if count else np.zeros(0, bool)
    top5_same = (top5_sets(deployed) == top5_sets(reference)).all(axis=1) if count else np.zeros(0, bool)
    ranks_deployed, ranks_reference = metric.ranks(deployed, labels), metric.ranks(reference, labels)
    top1, reference_top1 = (
        _percent(int((ranks_deployed < 1).sum()), count),
        _percent(int((ranks_reference < 1).sum()), count),
    )
    top5, reference_top5 = (
        _percent(int((ranks_deployed < 5).sum()), count),
        _percent(int((ranks_reference < 5).sum()), count),
    )
    difference = np.abs(deployed.astype(np.float64) - reference.astype(np.float64)) if count else np.zeros((0, 0))
    drop = round(reference_top1 - top1, 2)
    return {
        "batchSize": batch_size,
        "images": count,
        "top1Agreement": _percent(int(top1_same.sum()), count),
        "top5Agreement": _percent(int(top5_same.sum()), count),
        "top1": top1,
        "referenceTop1": reference_top1,
        "top1Drop": drop,
        "top5": top5,
        "referenceTop5": reference_top5,
        "top5Drop": round(reference_top5 - top5, 2),
        "maxAbsDiff": float(difference.max()) if count else 0.0,
        "meanAbsDiff": float(difference.mean()) if count else 0.0,
        "disagreements": [n for n, same in zip(names, top1_same) if not same][:DISAGREEMENTS_LISTED],
        "disagreementCount": int(count - top1_same.sum()),
        "ok": bool(count) and drop <= max_top1_drop,
    }
