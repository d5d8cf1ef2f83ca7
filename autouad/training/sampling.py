"""Deterministic batch streams that resume exactly.

A stream walks through epochs of a pool; epoch ``e`` is a permutation seeded by (seed, stream name, e).
Its whole state is one integer, the number of items drawn, so a checkpoint restores it exactly
without pickling a random generator.

Batches come through a batchgenerators ``DataLoader`` so that methods whose paper augments can add
batchgenerators transforms; ASC-Net and the auto-encoders of Chen & Konukoglu did not augment, so
their trainers add none.
"""
from __future__ import annotations

import time
import zlib

import numpy as np
from batchgenerators.dataloading.data_loader import DataLoader


class EpochStream:
    def __init__(self, size: int, seed: int, name: str):
        if size <= 0:
            raise ValueError(f"stream {name!r} over an empty pool")
        self.size, self.seed, self.name = int(size), int(seed), name
        self.position = 0
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(self.name.encode()), epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.size)
        return self._perm

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            epoch, offset = divmod(self.position, self.size)
            chunk = self._permutation(epoch)[offset:offset + n]
            out.append(chunk)
            self.position += len(chunk)
            n -= len(chunk)
        return np.concatenate(out)

    def state_dict(self) -> dict:
        return {"position": self.position, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"stream {self.name!r} was over {state['size']} items, now {self.size}")
        self.position = int(state["position"])


class PoolBatchLoader(DataLoader):
    """Batches of one slice pool, in the order of an ``EpochStream``.

    Under DDP every rank draws the same global batch and keeps its share (``rank::world_size``),
    so the ranks stay in step without exchanging indices.
    """

    def __init__(self, pool, batch_size: int, seed: int, name: str | None = None,
                 rank: int = 0, world_size: int = 1, transforms=None):
        super().__init__(pool, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=seed,
                         return_incomplete=False, shuffle=False, infinite=True)
        self.stream = EpochStream(len(pool), seed, name or pool.name)
        self.rank, self.world_size = rank, world_size
        self.transforms = transforms
        self.seconds = 0.0  # spent making batches (reading slices, transforms): the model waits for it

    def generate_train_batch(self) -> dict:
        start = time.perf_counter()
        indices = self.stream.take(self.batch_size)[self.rank::self.world_size]
        batch = {"data": self._data.read(indices), "indices": indices}
        if self.transforms is not None:
            batch = self.transforms(**batch)
        self.seconds += time.perf_counter() - start
        return batch
