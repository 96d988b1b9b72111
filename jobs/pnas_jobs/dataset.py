"""The evaluation set: which images there are, their labels, and which belong to which shard.

Images are found anywhere under `dataset.images` (flat, as ImageNet val, or in class sub-folders),
sorted by path; `limit` keeps the first N; shard i takes the i-th of `shards` contiguous slices.
Every shard computes the same list, so shards need no coordinator.
"""
from __future__ import annotations

from dataclasses import dataclass

from pnas_jobs import metric
from pnas_jobs.errors import UserError
from pnas_jobs.storage import NotFound, Store, StorageSettings, open_object, open_store

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


image_name = metric.image_name  # an image's key -> the name its label and result go by


@dataclass(frozen=True)
class Dataset:
    store: Store
    keys: tuple[str, ...]  # selected images, sorted
    labels: dict[str, int]
    total: int  # images found before `limit`

    def shard(self, index: int, shards: int) -> tuple[str, ...]:
        start, stop = shard_bounds(len(self.keys), shards, index)
        return self.keys[start:stop]


def shard_bounds(count: int, shards: int, index: int) -> tuple[int, int]:
    """numpy.array_split's split: the first `count % shards` shards get one more image."""
    base, extra = divmod(count, shards)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def read_labels(uri: str, settings: StorageSettings | None = None) -> dict[str, int]:
    store, key = open_object(uri, settings)
    try:
        text = store.read_text(key)
    except NotFound:
        raise UserError(f"spec.dataset.labels: {uri} does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"spec.dataset.labels: {uri} is not a text file") from None
    try:
        return metric.parse_labels(text, uri)
    except metric.LabelsError as error:
        raise UserError(f"spec.dataset.labels: {error}") from None


def load(images_uri: str, labels_uri: str, limit: int = 0, settings: StorageSettings | None = None) -> Dataset:
    store = open_store(images_uri, settings)
    keys = [k for k in store.list() if k.lower().endswith(IMAGE_SUFFIXES)]
    if not keys:
        raise UserError(
            f"spec.dataset.images: no images under {images_uri} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    seen: dict[str, str] = {}
    for key in keys:
        name = image_name(key)
        if name in seen:
            raise UserError(
                f"spec.dataset.images: {seen[name]} and {key} share the name {name!r}; results are keyed by name"
            )
        seen[name] = key
    selected = tuple(keys[:limit] if limit else keys)
    return Dataset(store, selected, read_labels(labels_uri, settings), len(keys))
