"""Resumable, DDP-sharded sampling: an endless stream of ``(epoch, index)`` pairs.

Datasets that derive every random choice of a sample from (seed, epoch, index) (crops, flips, noise) then
produce the same batches whatever the number of loader workers, and a run resumed at step t sees exactly
the samples an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler, Sampler

__all__ = ["TrainSampler"]


class TrainSampler(Sampler):
    """Endless ``(epoch, index)`` stream for one rank: each epoch's order is ``DistributedSampler``'s
    (shuffled with ``seed + epoch``, sharded over ranks, padded to equal length), and the stream starts
    after ``start`` samples of this rank (exact resume)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.per_epoch = len(self.inner)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = divmod(self.start, self.per_epoch)
        while True:
            self.inner.set_epoch(epoch)
            for k, i in enumerate(self.inner):
                if k >= skip:
                    yield epoch, int(i)
            epoch, skip = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(), which the trainer never asks
        return 2**62
