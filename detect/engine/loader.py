"""Repeatable data loading for training: sharded epoch sampler, per-sample seeding, transfers.

Every training sample ``i`` of epoch ``e`` is drawn with all RNGs (Python, NumPy, torch and the
albumentations pipeline's own generators) seeded from ``(seed, e, i)``. The augmentation of
a sample therefore does not depend on the number of workers, on persistent workers, on the
number of DDP processes or on where a run was resumed: 2 epochs straight equal 1 epoch plus a
resumed epoch, and 2 processes with batch B/2 see the same images as 1 process with batch B.
The order of epoch ``e`` is a permutation seeded by ``(seed, e)``, sharded like
``DistributedSampler`` (rank r takes positions r, r + W, ...).
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detect.data.dataset import float_images
from detect.engine.distributed import DistInfo

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for seed mixing


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (order matters); stable across processes and runs."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    seed_host(seed)
    torch.manual_seed(seed)  # every device's generator too


def seed_host(seed: int) -> None:
    """Seed Python, NumPy and torch's CPU generator: what a data sample may draw from. Once per
    sample, so no device generators: before CUDA is initialised ``torch.manual_seed`` queues a
    CUDA seeding with a formatted stack trace each time (~1.4 ms a sample, a fifth of an item)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


class EpochShardSampler(Sampler):
    """Yields ``(epoch, index)`` pairs: a ``(seed, epoch)``-seeded permutation of ``range(n)``
    (or ``range(n)`` without shuffle), padded to a multiple of ``world`` like
    ``DistributedSampler``, of which this rank takes every ``world``-th element.

    With ``repeat`` (float[n], each >= 1; see :func:`repeat_factors`) an epoch holds image ``i``
    ``floor(repeat[i])`` times plus once more with probability ``frac(repeat[i])`` (seeded by
    ``(seed, epoch)``), then is cut or padded to ``round(repeat.sum())`` so every epoch has the
    same length (LVIS's repeat factor sampling).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 repeat: Optional[np.ndarray] = None):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch = 0
        self.repeat = None if repeat is None else np.asarray(repeat, np.float64).reshape(n)
        if self.repeat is not None and not (self.repeat >= 1).all():
            raise ValueError("repeat factors must be >= 1")
        self.length = n if self.repeat is None else int(round(float(self.repeat.sum())))
        self.per_rank = math.ceil(self.length / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def _indices(self, g: torch.Generator) -> list[int]:
        if self.repeat is None:
            return list(range(self.n))
        base = np.floor(self.repeat)
        extra = torch.rand(self.n, generator=g, dtype=torch.float64).numpy() < (self.repeat - base)
        idx = np.repeat(np.arange(self.n), (base + extra).astype(np.int64))
        return (idx.tolist() * 2)[: self.length] if len(idx) < self.length else idx[: self.length].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = self._indices(g)
        if self.shuffle:
            order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
        pad = self.per_rank * self.world - len(order)
        order += (order * (pad // max(1, len(order)) + 1))[:pad]
        for i in order[self.rank :: self.world]:
            yield self.epoch, i


def repeat_factors(image_labels: Sequence[np.ndarray], power: float = 0.5) -> np.ndarray:
    """Per-image repeat factors that balance classes (repeat factor sampling, Gupta et al., LVIS
    2019, with the threshold set by the data): class ``c`` in a fraction ``f_c`` of the images
    gets ``r_c = max(1, (f_max / f_c) ** power)``, where ``f_max`` is the most frequent class's
    fraction; an image repeats as often as its rarest class asks, ``r_i = max_c r_c`` (1 for an
    image without boxes). ``power`` 0.5 (square root) halves the imbalance in log scale, 1 removes
    it in expectation.

    Args:
        image_labels: per image, int[G] class indices of its boxes.

    Returns:
        float64[n] factors, each >= 1.
    """
    n = len(image_labels)
    present = [np.unique(np.asarray(l, np.int64).reshape(-1)) for l in image_labels]
    k = 1 + max((int(p.max()) for p in present if p.size), default=-1)
    if n == 0 or k == 0:
        return np.ones(n)
    freq = np.zeros(k)
    for p in present:
        freq[p] += 1
    freq /= n
    f_max = freq.max()
    r_class = np.where(freq > 0, np.maximum(1.0, (f_max / np.maximum(freq, 1e-12)) ** power), 1.0)
    return np.array([r_class[p].max() if p.size else 1.0 for p in present])


class SeededDataset(Dataset):
    """``dataset[(epoch, i)]`` = ``dataset[i]`` drawn with every RNG seeded from
    ``(seed, epoch, i)``. Reaches the transform's own generators through ``set_random_seed``
    (albumentations >= 2 ignores the global RNGs)."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        s = mix_seed(self.seed, epoch, i)
        seed_host(s)
        tf = getattr(self.dataset, "transform", None)
        if hasattr(tf, "set_random_seed"):  # what DetectionDataset itself does from torch.initial_seed()
            tf.set_random_seed(s % 2**32)
        return self.dataset[i]


def worker_init_fn(worker_id: int) -> None:
    """Seed NumPy and Python in a worker from torch's per-worker seed (which the DataLoader
    derives from its seeded generator), for anything random outside ``SeededDataset``."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def train_loader(
    dataset: Any, batch: int, collate: Callable, info: DistInfo, seed: int, workers: int, device: torch.device,
    repeat: Optional[np.ndarray] = None,
) -> tuple[DataLoader, EpochShardSampler]:
    """Loader of this rank's shard, ``batch`` images per step (the global batch / world size);
    ``repeat``: per-image repeat factors (see :class:`EpochShardSampler`).

    Drops the last incomplete batch when the shard holds at least one full batch, so every
    step has the same size (and DDP matches one process with the global batch).
    """
    sampler = EpochShardSampler(len(dataset), True, seed, info.rank, info.world_size, repeat)
    g = torch.Generator().manual_seed(mix_seed(seed, info.rank, 1))
    loader = DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=len(sampler) >= batch,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=worker_init_fn,
        generator=g,
    )
    return loader, sampler


def eval_loader(dataset: Any, batch: int, collate: Callable, workers: int, device: torch.device) -> DataLoader:
    """In-order loader over the whole dataset (evaluation runs on rank 0 only)."""
    return DataLoader(
        dataset, batch_size=batch, shuffle=False, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )


def to_device(
    images: torch.Tensor, targets: Sequence[dict[str, Any]], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Move a batch to ``device`` without blocking the host (from pinned memory); uint8 images
    travel as they are and become float32 [0, 1] there (:func:`~detect.data.dataset.float_images`).
    Every tensor of every target moves, whatever its key (``proposals`` etc.); other values pass
    through."""
    nb = device.type == "cuda"
    images = float_images(images.to(device, non_blocking=nb))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = [{k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, out
