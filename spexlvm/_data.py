"""Minibatches from every AnnData storage, streamed: in memory, sparse or on disk.

The model never needs the whole matrix at once: per-gene statistics, the initialisation,
training and the getters read cells in chunks through :class:`RowReader`, and only a
chunk (or a minibatch) is ever densified.

Storage and access pattern
--------------------------
* In memory, dense (``numpy``): minibatches of cells drawn at random, one permutation per
  epoch (``block_size=1``), sliced from one tensor that shares the array's memory.
* In memory, sparse (``scipy`` CSR): the same random cells; only the minibatch is
  densified.
* On disk (``anndata.read_h5ad(path, backed="r")`` with a dense or CSR ``X``, a ``zarr``
  or ``dask`` array as ``X``): reading cells one by one at random positions is slow
  (h5py fancy indexing, or decompressing a whole chunk per cell), so cells are read in
  contiguous *blocks*: the order of the blocks is shuffled each epoch and a minibatch
  is a set of whole blocks, each read with one contiguous slice, in a background thread
  while the previous minibatch trains. No shuffle inside a block is needed: the ELBO of a
  minibatch is a sum over its cells, so their order does not matter; what matters is
  that a minibatch mixes many blocks (about 64 by default) from all over the file.

Known covariates registered with ``setup_anndata`` (batch, categorical and continuous
covariates: ``obs`` columns, always in memory) travel with the matrix: every minibatch
is a dict with ``"X"`` and, sliced with the same cells, one tensor per registered
covariate field (:func:`obs_fields`), so DDP processes and streamed data see the
covariates of exactly their cells.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from scipy import sparse

from ._utils import to_dense

logger = logging.getLogger(__name__)

#: Size of a contiguous block of cells read from disk, in bytes of the dense matrix.
_BLOCK_BYTES = 2**20
#: Blocks per minibatch aimed at when the block size is chosen for data on disk.
_MIN_BLOCKS_PER_BATCH = 64
#: Minibatches read ahead (in one background thread) for data on disk.
_PREFETCH = 2
#: Number of blocks the initialisation sample of cells on disk is spread over.
_INIT_BLOCKS = 32

_ON_DISK = ("h5py", "backed_csr", "backed_csc", "zarr", "dask")


def storage_kind(x: Any) -> str:
    """How a cells x genes matrix is stored.

    Returns one of ``"dense"`` (numpy), ``"sparse"`` (scipy), ``"h5py"`` (dense ``X`` of
    an AnnData read with ``backed="r"``), ``"backed_csr"`` / ``"backed_csc"`` (sparse
    ``X`` of a backed AnnData), ``"zarr"`` or ``"dask"``.

    Raises
    ------
    TypeError
        For any other type.
    """
    if isinstance(x, np.ndarray):
        return "dense"
    if sparse.issparse(x):
        return "sparse"
    try:
        import h5py

        if isinstance(x, h5py.Dataset):
            return "h5py"
    except ImportError:  # pragma: no cover - h5py comes with anndata
        pass
    try:
        from anndata.abc import CSCDataset, CSRDataset

        if isinstance(x, CSRDataset):
            return "backed_csr"
        if isinstance(x, CSCDataset):
            return "backed_csc"
    except ImportError:  # pragma: no cover - anndata < 0.11
        pass
    module = type(x).__module__
    if module.startswith("zarr"):
        return "zarr"
    if module.startswith("dask"):
        return "dask"
    raise TypeError(
        f"Cannot read cells from a {type(x).__module__}.{type(x).__name__}: spexlvm reads "
        "numpy arrays, scipy sparse matrices, backed h5ad (`anndata.read_h5ad(path, "
        "backed='r')`), zarr and dask arrays. Convert the matrix to one of these."
    )


class RowReader:
    """Dense float32 rows (cells) of a matrix in any storage, read in contiguous pieces.

    Parameters
    ----------
    x
        Cells x genes: numpy array, scipy sparse matrix, ``h5py.Dataset`` or
        ``anndata`` backed sparse dataset (``read_h5ad(path, backed="r")``), ``zarr`` or
        ``dask`` array.
    """

    def __init__(self, x: Any):
        self.x = x
        self.kind = storage_kind(x)
        self.n_obs, self.n_vars = (int(s) for s in x.shape)
        self._tensor: torch.Tensor | None = None
        if self.kind == "dense" and x.dtype == np.float32 and x.flags.c_contiguous:
            with warnings.catch_warnings():  # a read-only array is never written to
                warnings.filterwarnings("ignore", message=".*not writable.*")
                self._tensor = torch.from_numpy(x)
        if self.kind == "backed_csc" or (self.kind == "sparse" and x.format == "csc"):
            warnings.warn(
                "The matrix is stored as CSC (column-compressed): reading cells (rows) from "
                "it is slow, and from a backed file reads the whole matrix every time. Store "
                "it as CSR: `adata.X = adata.X.tocsr()` (then write the file again).",
                UserWarning,
                stacklevel=3,
            )

    @property
    def on_disk(self) -> bool:
        """Whether the matrix is read from disk (contiguous reads are much faster)."""
        return self.kind in _ON_DISK

    @property
    def row_bytes(self) -> float:
        """Bytes read per cell (dense: 4 per gene; sparse: 8 per stored value)."""
        if self.kind in ("sparse", "backed_csr", "backed_csc"):
            nnz = self._nnz()
            if nnz is not None:
                return max(8.0, 8.0 * nnz / max(self.n_obs, 1))
        return 4.0 * self.n_vars

    def _nnz(self) -> int | None:
        if self.kind == "sparse":
            return int(self.x.nnz)
        try:
            return int(self.x.group["data"].shape[0])
        except Exception:  # an estimate is enough
            return None

    @property
    def chunk_rows(self) -> int | None:
        """Rows per storage chunk (zarr, dask, chunked h5py), if the storage has chunks."""
        chunks = None
        if self.kind in ("zarr", "h5py"):
            chunks = getattr(self.x, "chunks", None)
            chunks = chunks[0] if chunks else None
        elif self.kind == "dask":
            chunks = self.x.chunks[0][0] if self.x.chunks and self.x.chunks[0] else None
        return int(chunks) if chunks else None

    def default_block_size(self, batch_size: int) -> int:
        """Cells per contiguous block: 1 in memory; on disk about 1 MB, chunk-aligned."""
        if not self.on_disk:
            return 1
        rows = max(1, int(_BLOCK_BYTES // self.row_bytes))
        rows = min(rows, max(1, batch_size // _MIN_BLOCKS_PER_BATCH))
        chunk = self.chunk_rows
        if chunk and chunk > 1:
            # whole chunks: a partial chunk costs as much to read (decompress) as a whole one
            rows = chunk * max(1, round(rows / chunk))
        return int(max(1, min(rows, batch_size, self.n_obs)))

    # ------------------------------------------------------------------ reading
    def rows(self, start: int, stop: int) -> np.ndarray:
        """Dense float32 copy (or view) of the cells ``start:stop``."""
        return to_dense(self.x[start:stop], np.float32)

    def take(self, index: np.ndarray) -> torch.Tensor:
        """Dense float32 tensor of the cells ``index`` (sorted, increasing)."""
        index = np.asarray(index, dtype=np.int64)
        n = index.size
        if self._tensor is not None:
            if n and index[-1] - index[0] == n - 1:
                return self._tensor[index[0] : index[-1] + 1]  # consecutive cells: a view
            # numpy's row gather is several times faster than torch.index_select on CPU
            return torch.from_numpy(np.take(self.x, index, axis=0))
        if self.kind == "dense":
            return torch.from_numpy(np.asarray(self.x[index], dtype=np.float32))
        if self.kind == "sparse":
            return torch.from_numpy(np.asarray(self.x[index].toarray(), dtype=np.float32))
        # on disk: one contiguous read per run of consecutive cells
        out = np.empty((n, self.n_vars), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        pos = 0
        for run in np.split(index, breaks):
            if run.size:
                out[pos : pos + run.size] = self.rows(int(run[0]), int(run[-1]) + 1)
                pos += run.size
        return torch.from_numpy(out)

    def chunks(
        self, chunk_size: int, *, prefetch: int | None = None
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Consecutive chunks of cells, as dense float32 tensors (read ahead on disk)."""
        chunk_size = max(1, int(chunk_size))
        slices = [
            slice(s, min(s + chunk_size, self.n_obs)) for s in range(0, self.n_obs, chunk_size)
        ]
        indices = (np.arange(sl.start, sl.stop) for sl in slices)
        depth = (_PREFETCH if self.on_disk else 0) if prefetch is None else prefetch
        yield from zip(slices, _read_ahead(self, indices, depth), strict=True)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """About ``n`` cells at random, as a dense float32 array (see :meth:`sample_index`)."""
        return self.take(self.sample_index(n, rng)).numpy()

    def sample_index(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted indices of about ``n`` cells at random.

        In memory: ``n`` cells drawn without replacement. On disk: ``n`` cells in
        :data:`_INIT_BLOCKS` contiguous blocks at random positions.
        """
        n = min(n, self.n_obs)
        if not self.on_disk:
            return np.sort(rng.choice(self.n_obs, size=n, replace=False))
        size = max(1, math.ceil(n / _INIT_BLOCKS))
        n_blocks = math.ceil(self.n_obs / size)
        chosen = np.sort(rng.choice(n_blocks, size=min(n_blocks, _INIT_BLOCKS), replace=False))
        return np.concatenate(
            [np.arange(b * size, min((b + 1) * size, self.n_obs)) for b in chosen]
        )


def _read_ahead(reader: Any, indices: Iterator[np.ndarray], depth: int) -> Iterator[Any]:
    """``reader.take`` of each index array, ``depth`` of them read ahead in a thread."""
    if depth <= 0:
        for index in indices:
            yield reader.take(index)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spexlvm-read")
    pending: deque = deque()
    try:
        for index in indices:
            pending.append(pool.submit(reader.take, index))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class BlockSampler:
    """Minibatches of cells made of whole contiguous blocks, shuffled every epoch.

    The cells are cut into blocks of ``block_size`` consecutive cells; each epoch the
    block order is permuted (seeded by ``seed`` and the epoch, so every process and a
    resumed run draw the same order) and every ``round(batch_size / block_size)`` blocks
    form one optimisation step. With ``world_size`` processes (DDP), the blocks of a step
    are dealt out among them, so a step covers the same cells as with one process and
    every process runs the same number of steps (a process that would get no block in
    the last step gets one from the start of the order). Yields the sorted cell indices
    of this process's share of each step.

    Parameters
    ----------
    n_obs
        Number of cells.
    batch_size
        Cells per optimisation step, over all processes.
    block_size
        Consecutive cells per block (1: independent random cells).
    shuffle
        Whether to permute the blocks (else they come in file order).
    seed
        Seed of the permutations.
    rank, world_size
        This process and the number of processes.
    """

    def __init__(
        self,
        n_obs: int,
        batch_size: int,
        block_size: int = 1,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if n_obs < 1 or batch_size < 1 or block_size < 1:
            raise ValueError("n_obs, batch_size and block_size must be positive.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size}).")
        self.n_obs = int(n_obs)
        self.world_size = int(world_size)
        batch_size = min(int(batch_size), self.n_obs)
        # every process needs at least one block per step
        block_size = min(int(block_size), max(1, batch_size // self.world_size))
        self.block_size = int(block_size)
        self.n_blocks = math.ceil(self.n_obs / self.block_size)
        # whole blocks per step, as close to batch_size as they come (all of them: full batch)
        per_step = self.n_blocks if batch_size >= self.n_obs else round(batch_size / block_size)
        self.blocks_per_step = max(self.world_size, 1, per_step)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of this epoch (Lightning calls it before every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_blocks / self.blocks_per_step)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_blocks)
        else:
            order = np.arange(self.n_blocks)
        for start in range(0, self.n_blocks, self.blocks_per_step):
            step = order[start : start + self.blocks_per_step]
            if step.size < self.world_size:
                step = np.concatenate([step, order[: self.world_size - step.size]])
            mine = np.sort(step[self.rank :: self.world_size])
            yield self._cells(mine)

    def _cells(self, blocks: np.ndarray) -> np.ndarray:
        if self.block_size == 1:
            return blocks.astype(np.int64)
        cells = (blocks.astype(np.int64)[:, None] * self.block_size) + np.arange(self.block_size)
        cells = cells.ravel()
        return cells[cells < self.n_obs]


def obs_fields(adata_manager: Any) -> dict[str, torch.Tensor]:
    """The registered per-cell fields other than ``X`` (the covariates), as tensors.

    Categorical fields hold integer codes (cells x 1 for the batch, cells x n for the
    joint categorical covariates), continuous ones float32 values (cells x n).
    """
    from ._constants import REGISTRY_KEYS

    out = {}
    registered = adata_manager.data_registry
    for key in (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CAT_COVS_KEY, REGISTRY_KEYS.CONT_COVS_KEY):
        if key not in registered:
            continue
        values = np.asarray(adata_manager.get_from_registry(key))
        values = values.reshape(values.shape[0], -1)
        dtype = np.float32 if key == REGISTRY_KEYS.CONT_COVS_KEY else np.int64
        out[key] = torch.from_numpy(np.ascontiguousarray(values, dtype=dtype))
    return out


class _FieldsReader:
    """``take(index)``: the dict of a minibatch, the matrix rows and the covariate rows."""

    def __init__(self, reader: RowReader, fields: dict[str, torch.Tensor]):
        self.reader = reader
        self.fields = fields

    def take(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
        out = {"X": self.reader.take(index)}
        out.update({key: value[rows] for key, value in self.fields.items()})
        return out


class MinibatchLoader:
    """Iterable of ``{"X": tensor}`` minibatches for Lightning; reads ahead on disk.

    With registered covariates (``fields``, see :func:`obs_fields`) each minibatch also
    holds their rows of the same cells. Lightning finds :attr:`sampler` and calls its
    ``set_epoch`` before every epoch.
    """

    def __init__(
        self,
        reader: RowReader,
        sampler: BlockSampler,
        prefetch: int = 0,
        fields: dict[str, torch.Tensor] | None = None,
    ):
        self.reader = reader
        self.sampler = sampler
        self.prefetch = int(prefetch)
        self.fields = dict(fields or {})

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.fields:
            reader = _FieldsReader(self.reader, self.fields)
            yield from _read_ahead(reader, iter(self.sampler), self.prefetch)
            return
        for x in _read_ahead(self.reader, iter(self.sampler), self.prefetch):
            yield {"X": x}


class SpexLVMDataModule(LightningDataModule):
    """Training data of :class:`~spexlvm.SpexLVM`: every cell, streamed in minibatches.

    Takes the place of scvi-tools' ``DataSplitter`` (``SpexLVM._data_splitter_cls``):
    spexlvm trains on every cell (the cell scores are computed, not learnt, so no cell
    needs to be held out), and reads the registered matrix through :class:`RowReader`
    without loading it whole. With several processes (DDP) each reads only its share of
    every step. The seed of the shuffles is part of the checkpoint (``state_dict``), so
    that a resumed run draws the same minibatches as an uninterrupted one.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    train_size, validation_size, shuffle_set_split
        scvi-tools' split arguments; only ``train_size=1`` (every cell) is accepted.
    batch_size
        Cells per optimisation step (over all processes).
    block_size
        Consecutive cells per block; ``None``: 1 in memory, about 1 MB on disk.
    shuffle
        Whether to shuffle the blocks every epoch.
    seed
        Seed of the shuffles; ``None`` draws one from torch's generator (seeded by
        ``scvi.settings.seed``).
    prefetch
        Minibatches read ahead in a background thread; ``None``: 2 on disk, 0 in memory.
    """

    def __init__(
        self,
        adata_manager: Any,
        train_size: float | None = 1.0,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        batch_size: int = 128,
        *,
        block_size: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        prefetch: int | None = None,
    ):
        super().__init__()
        if (train_size is not None and float(train_size) != 1.0) or validation_size:
            raise ValueError(
                "spexlvm trains on every cell (train_size=1, no validation set): the cell "
                "scores are computed from the loadings, so held-out cells can be projected "
                "with `model.get_factors(adata_new)` afterwards."
            )
        from ._constants import REGISTRY_KEYS

        self.adata_manager = adata_manager
        self.reader = RowReader(adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        self.fields = obs_fields(adata_manager)
        self.batch_size = int(min(max(1, batch_size), self.reader.n_obs))
        self.block_size = int(
            block_size if block_size is not None else self.reader.default_block_size(batch_size)
        )
        if self.block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
        self.shuffle = shuffle
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.prefetch = (
            (_PREFETCH if self.reader.on_disk else 0) if prefetch is None else int(prefetch)
        )
        self.n_train, self.n_val = self.reader.n_obs, 0

    def setup(self, stage: str | None = None) -> None:
        """Every cell is a training cell (scvi-tools reads these indices after training)."""
        self.train_idx = np.arange(self.reader.n_obs)
        self.val_idx = np.zeros(0, dtype=np.int64)
        self.test_idx = np.zeros(0, dtype=np.int64)

    def sampler(self, rank: int = 0, world_size: int = 1) -> BlockSampler:
        """The minibatch sampler of one process."""
        return BlockSampler(
            self.reader.n_obs,
            self.batch_size,
            self.block_size,
            shuffle=self.shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
        )

    def train_dataloader(self) -> MinibatchLoader:
        """Minibatches of this process (its share of every step under DDP)."""
        trainer = getattr(self, "trainer", None)
        rank = int(trainer.global_rank) if trainer is not None else 0
        world = int(trainer.world_size) if trainer is not None else 1
        return MinibatchLoader(
            self.reader, self.sampler(rank, world), self.prefetch, fields=self.fields
        )

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to draw the same minibatches."""
        return {"seed": self.seed, "batch_size": self.batch_size, "block_size": self.block_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the shuffle seed of a checkpoint."""
        self.seed = int(state_dict.get("seed", self.seed))
