"""The order training samples are drawn in: shuffled per epoch, sharded per rank, resumable.

Each rank reads its shard of a ``DistributedSampler`` permutation, epoch after epoch, as one
endless stream cut into batches. A run resumed at step ``s`` starts at stream position
``s * batch_size``, so it sees exactly the samples the uninterrupted run would have seen.
Every item also carries the seed words for its own augmentation and prompt sampling,
(run seed, step, rank, slot in the batch): randomness then depends neither on DataLoader
workers nor on where a run was resumed, and (run seed, step) alone gives choices every rank
must make alike.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .config import RunConfig
from .distributed import DistContext

SeedWords = tuple[int, int, int, int]
SampleKey = tuple[int, SeedWords]
"""(dataset index, (run seed, step, rank, slot)) for ``numpy.random.default_rng``."""


class TrainingStream(Sampler[SampleKey]):
    def __init__(self, dataset_size: int, ctx: DistContext, seed: int, batch_size: int, start_step: int = 0) -> None:
        if dataset_size == 0:
            raise ValueError("the training dataset is empty")
        self.dataset_size = dataset_size
        self.ctx = ctx
        self.seed = seed
        self.batch_size = batch_size
        self.start_step = start_step

    def _epoch_order(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(
            range(self.dataset_size), num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[SampleKey]:
        per_epoch = len(self._epoch_order(0))
        position = self.start_step * self.batch_size
        epoch, offset = divmod(position, per_epoch)
        while True:
            for index in self._epoch_order(epoch)[offset:]:
                step, slot = divmod(position, self.batch_size)
                yield index, (self.seed, step, self.ctx.rank, slot)
                position += 1
            epoch, offset = epoch + 1, 0


def step_seed(seed_words: SeedWords) -> int:
    """A seed shared by every item of one step on every rank: (run seed, step) only."""
    return seed_words[0] * 1_000_003 + seed_words[1]


def training_loader(dataset: Dataset, config: RunConfig, ctx: DistContext, start_step: int) -> DataLoader:
    """The endless batch stream both trainers read; pinned batches and deep prefetch when on a GPU."""
    workers = config.num_workers
    return DataLoader(
        dataset, batch_size=config.batch_size, num_workers=workers,
        sampler=TrainingStream(len(dataset), ctx, config.seed, config.batch_size, start_step),
        pin_memory=ctx.device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
