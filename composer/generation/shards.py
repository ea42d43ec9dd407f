"""Shards: which samples shard ``i`` holds, the seed of each of its sampler calls, and its exact bytes.

The dataset's samples are the plan's compositions in order; shard ``i`` holds samples
``[i * S, min((i + 1) * S, N))`` (``S`` the shard size). Inside a shard, the samples of one composition
(a *segment*) come from one ``composer.sample`` call whose seed is derived from ``(seed, i, composition)``
only, so a shard is a pure function of ``(plan, options, seed, i)``: it does not depend on which shards
were made before it, by which process, or in how many runs.

Shards are ``.npz`` files (the format of ``composer dataset`` and ``composer sample --out``, read by
``numpy.load(..., allow_pickle=False)`` and by ``composer train``) written byte for byte
deterministically: ``numpy.savez`` stamps each zip entry with the current time, so ``npz_bytes``
writes the zip itself with a fixed timestamp (1980-01-01) and no compression (like ``savez``).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np

SHARD_NAME = "shard-{:06d}.npz"
#: every zip entry's timestamp (the earliest a zip can hold): the bytes never depend on the clock
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Segment:
    """The samples of one composition inside one shard.

    Attributes:
        composition: index of the composition in the plan.
        start: index of the segment's first sample within the shard.
        count: number of samples.
    """

    composition: int
    start: int
    count: int


def num_shards(total: int, shard_size: int) -> int:
    """Shards of a dataset of ``total`` samples: ``ceil(total / shard_size)``."""
    return -(-total // shard_size)


def shard_count(total: int, shard_size: int, i: int) -> int:
    """Number of samples in shard ``i``."""
    return max(0, min(shard_size, total - i * shard_size))


def segments(counts: list[int], shard_size: int, i: int) -> list[Segment]:
    """The segments of shard ``i`` for compositions of ``counts`` samples each, in order."""
    lo, hi = i * shard_size, min((i + 1) * shard_size, sum(counts))
    out, begin = [], 0
    for c, count in enumerate(counts):
        end = begin + count
        a, b = max(lo, begin), min(hi, end)
        if a < b:
            out.append(Segment(c, a - lo, b - a))
        if end >= hi:
            break
        begin = end
    return out


def segment_seed(seed: int, shard: int, composition: int) -> int:
    """The seed (63 bits) of the sampler call of ``composition`` in shard ``shard``.

    ``numpy.random.SeedSequence`` mixes the three integers, so neighbouring shards and compositions get
    unrelated streams (not ``seed + i``, whose streams overlap between runs with nearby seeds).
    """
    words = [int(seed) % 2**64, int(shard), int(composition)]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The ``.npz`` file of ``arrays`` (name -> array), identical bytes for identical arrays.

    Each array is an uncompressed ``NAME.npy`` entry (``numpy.lib.format``), in the order given, dated
    ``ZIP_EPOCH``; ``numpy.load`` reads it like any ``savez`` output.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, whatever the platform that wrote it
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
