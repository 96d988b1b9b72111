"""Sample data for trying pnas-eval offline: generated images, and weights whose accuracy is known.

No ImageNet and no pretrained weights can be downloaded here, and a randomly initialised network
predicts one class for every image. So the demo (and the tests) plant a classifier head: the
backbone stays random, and the last linear layer is solved, by least squares on the images' own
pooled features, so that each image scores its label at a chosen rank (1st, 2nd, ... or outside
the top 5). The pipeline's Top1..Top5 must then come out exactly as planted. That checks every
stage end to end; it says nothing about the model's real accuracy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pnas_jobs import metric

LABEL_SCORE, DECOY_STEP = 10.0, 1.0


@dataclass(frozen=True)
class Planted:
    weights: Path
    ranks: dict[str, int]  # image name -> 0-based rank of its label (5 = outside the top 5)
    num_classes: int

    def table(self, names=None) -> dict:
        """The accuracy JSON the pipeline must produce for these images."""
        names = list(names or self.ranks)
        return metric.accuracy_table(len(names), self.num_classes, metric.hits([self.ranks[n] for n in names]))


def sample_images(folder: Path, count: int, classes: int = 1000, seed: int = 0) -> dict[str, int]:
    """`count` JPEGs of assorted sizes and content, ImageNet-val names, and their val_label.txt."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(count):
        width, height = int(rng.integers(300, 640)), int(rng.integers(240, 560))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = rng.uniform(0, 2 * math.pi, 3)
        freq = rng.uniform(0.005, 0.05, 3)
        pixels = np.stack(
            [
                127 + 120 * np.sin(freq[c] * (x * math.cos(phase[c]) + y * math.sin(phase[c])) + phase[c])
                for c in range(3)
            ],
            axis=-1,
        )
        pixels += rng.normal(0, 12, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 7))):
            box = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
                [box[0][0], box[1][0], box[0][1], box[1][1]], fill=colour
            )
        name = f"ILSVRC2012_val_{i + 1:08d}"
        image.save(folder / f"{name}.JPEG", quality=90)
        labels[name] = int(rng.integers(0, classes))
    return labels


def write_labels(path: Path, labels: dict[str, int]) -> None:
    path.write_text("".join(f"{name}.JPEG {label}\n" for name, label in sorted(labels.items())))


def default_ranks(names: list[str]) -> dict[str, int]:
    """A spread of label ranks: most images right, some 2nd..5th, some missed entirely."""
    pattern = [0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 5, 0, 1]
    return {name: pattern[i % len(pattern)] for i, name in enumerate(names)}


def plant_head(
    model_name: str,
    crops: np.ndarray,
    names: list[str],
    labels: dict[str, int],
    ranks: dict[str, int],
    weights: Path,
    preprocess,
    runner_up: float = 0.0,
) -> Planted:
    """Save weights (random backbone, solved head) under which each image's label has its rank.

    With `runner_up`, an image whose label ranks first has the class before it that many points
    below: a near tie that lower precision may break the other way (the fidelity tests)."""
    import timm
    import torch

    from pnas_jobs import transform

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval()
    with torch.no_grad():
        batches = [transform.normalize(crops[i : i + 8], preprocess) for i in range(0, len(crops), 8)]
        features = np.concatenate(
            [
                model.forward_head(model.forward_features(torch.from_numpy(b)), pre_logits=True).double().numpy()
                for b in batches
            ]
        )
    classes = model.num_classes
    if len(names) > features.shape[1]:
        raise ValueError(f"{model_name} has {features.shape[1]} features: plant at most that many images")
    target = np.zeros((len(names), classes))
    for row, name in enumerate(names):
        label = labels[name]
        target[row, label] = LABEL_SCORE
        for j in range(ranks[name]):  # decoys above the label push it down to its rank
            target[row, (label + 1 + j) % classes] = LABEL_SCORE + DECOY_STEP * (j + 1)
        if runner_up and not ranks[name]:  # the class before: argmax keeps the first of equal scores
            target[row, (label - 1) % classes] = LABEL_SCORE - runner_up
    # centre the features (the random backbone's features share a large common part) and solve
    mean = features.mean(axis=0)
    solution, *_ = np.linalg.lstsq(features - mean, target - target.mean(axis=0), rcond=None)
    bias = target.mean(axis=0) - mean @ solution
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(solution.T))
        head.bias.copy_(torch.from_numpy(bias))
        check = np.concatenate([model(torch.from_numpy(b)).numpy() for b in batches])
    got = metric.ranks(check, np.array([labels[n] for n in names]))
    wanted = np.array([min(ranks[n], 5) for n in names])
    if not np.array_equal(np.minimum(got, 5), wanted):
        raise RuntimeError(f"planting failed for {(np.minimum(got, 5) != wanted).sum()} images")
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    return Planted(weights, {n: int(r) for n, r in zip(names, wanted)}, classes)


def crops_of(folder: Path, names: list[str], preprocess) -> np.ndarray:
    from pnas_jobs import transform

    return np.stack([transform.preprocess((folder / f"{n}.JPEG").read_bytes(), preprocess) for n in names])


def plant_sample(model: str, images: Path, labels_path: Path, weights: Path, count: int, seed: int = 0) -> Planted:
    """`count` generated images, their labels file and weights with a head planted on them."""
    from pnas_jobs import transform

    labels = sample_images(images, count, seed=seed)
    write_labels(labels_path, labels)
    names = sorted(labels)
    config = transform.resolve(model)
    return plant_head(model, crops_of(images, names, config), names, labels, default_ranks(names), weights, config)


def prepare(pnaseval, count: int) -> Planted:
    """Generate the images, labels and planted weights that a demo manifest names."""
    spec = pnaseval.spec
    return plant_sample(
        spec.model.name, Path(spec.dataset.images), Path(spec.dataset.labels), Path(spec.model.weights), count
    )


def main(spec_path: Path, count: int, workers: int) -> int:
    from pnas_jobs import layout, local, records
    from pnas_jobs.report import Report
    from pnas_jobs.spec import load_manifest
    from pnas_jobs.storage import open_store

    pnaseval = load_manifest(spec_path)
    print(
        "pnas-eval demo: no pretrained weights can be downloaded here, so the backbone is random and the\n"
        f"classifier head is planted on {count} generated image{'' if count == 1 else 's'}: each label sits at a known rank, so the\n"
        "expected Top1..Top5 are known in advance. This checks the pipeline, not the model's accuracy.",
        file=sys.stderr,
    )
    planted = prepare(pnaseval, count)
    workdir = Path(pnaseval.spec.storage.uri).parent if pnaseval.spec.storage.uri else Path("demo")
    code = local.evaluate(pnaseval, workdir, workers)
    if code:
        return code
    meta = pnaseval.metadata
    store = open_store(layout.root(local.storage_uri(pnaseval, workdir), meta.namespace, meta.name))
    expected = metric.seed_json(planted.table())
    report = Report.model_validate(records.read(store, layout.REPORT))
    for result in report.results:
        same = store.read_text(result.json_) == expected
        verdict = "matches the planted answer" if same else f"DIFFERS from the planted answer {expected}"
        print(f"bs{result.batch_size}: {verdict}")
        code = code or (0 if same else 1)
    return code
