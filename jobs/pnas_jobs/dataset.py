"""The evaluation set: which images there are, their labels, and which belong to which shard.

Images are found anywhere under `dataset.images` (flat, as ImageNet val, or in class sub-folders),
sorted by path: files with an image suffix, and any file the labels file names (so a labelled file is
never skipped silently: it is scored, or recorded as failed). `limit` keeps the first N; shard i takes
the i-th of `shards` contiguous slices. Every shard computes the same list, so shards need no
coordinator. Each image's version token (storage.py) comes with the listing, at no extra cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from pnas_jobs import metric
from pnas_jobs.errors import UserError
from pnas_jobs.storage import NotFound, Store, StorageSettings, open_object, open_store

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")


image_name = metric.image_name  # an image's key -> the name its label and result go by


@dataclass(frozen=True)
class Dataset:
    store: Store
    keys: tuple[str, ...]  # selected images, sorted
    labels: metric.Labels
    total: int  # images found before `limit`
    versions: dict[str, str]  # key -> version token of every file found (storage.Store.versions)

    def shard(self, index: int, shards: int) -> tuple[str, ...]:
        start, stop = shard_bounds(len(self.keys), shards, index)
        return self.keys[start:stop]


def shard_bounds(count: int, shards: int, index: int) -> tuple[int, int]:
    """numpy.array_split's split: the first `count % shards` shards get one more image."""
    base, extra = divmod(count, shards)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def read_labels(uri: str, settings: StorageSettings | None = None) -> metric.Labels:
    store, key = open_object(uri, settings)
    try:
        text = store.read_text(key)
    except NotFound:
        raise UserError(f"spec.dataset.labels: {uri} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"spec.dataset.labels: {uri} is a folder; give the labels file (e.g. val_label.txt)") from None
    except UnicodeDecodeError:
        raise UserError(f"spec.dataset.labels: {uri} is not a text file") from None
    try:
        return metric.parse_labels(text, uri)
    except metric.LabelsError as error:
        raise UserError(f"spec.dataset.labels: {error}") from None


def load(images_uri: str, labels_uri: str, limit: int = 0, settings: StorageSettings | None = None) -> Dataset:
    labels = read_labels(labels_uri, settings)
    store = open_store(images_uri, settings)
    versions = store.versions()
    keys = sorted(k for k in versions if k.lower().endswith(IMAGE_SUFFIXES) or k.rsplit("/", 1)[-1] in labels.files)
    if not keys:
        raise UserError(f"spec.dataset.images: no images under {images_uri} (looked for {', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, str] = {}
    for key in keys:
        name = image_name(key)
        if name in seen:
            raise UserError(
                f"spec.dataset.images: {seen[name]} and {key} share the name {name!r}; results are keyed by name"
            )
        seen[name] = key
    if limit > len(keys):
        raise UserError(
            f"spec.dataset.limit is {limit} but there are only {len(keys)} images under {images_uri}: "
            "lower it, or 0 for all of them"
        )
    selected = tuple(keys[:limit] if limit else keys)
    if not any(image_name(k) in labels for k in selected):
        example = next(iter(labels))
        raise UserError(
            f"spec.dataset.labels: none of the {len(selected)} images under {images_uri} has a label in {labels_uri} "
            f"(images such as {image_name(selected[0])!r}, labels such as {example!r} on line {labels.lines[example]}); "
            "images and labels are matched by file name without extension"
        )
    return Dataset(store, selected, labels, len(keys), versions)
