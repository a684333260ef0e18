"""Small helpers shared by the model and the tools."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse


def package_version() -> str:
    """The installed spexlvm's version (``"0.0.0+unknown"`` when run from a source tree).

    The one place the version is looked up: ``spexlvm.__version__``, the command line's
    ``--version``, saved models, checkpoints and ``uns["spexlvm"]`` all read it here.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spexlvm")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def column_correlation(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    paired: bool = False,
    constant: float = float("nan"),
) -> np.ndarray:
    """Pearson correlation, over rows, between the columns of ``a`` and those of ``b``.

    The one column-correlation of the tools and plots (float64). All pairs (``a.k x b.k``;
    ``a`` with itself when ``b`` is None), or column ``i`` of ``a`` with column ``i`` of
    ``b`` when ``paired``. A constant column (a switched-off factor) has no correlation:
    ``constant`` (NaN by default). Values are clipped to [-1, 1] against rounding.
    """
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm_a = np.sqrt((a * a).sum(axis=0))
    norm_b = np.sqrt((b * b).sum(axis=0))
    if paired:
        num, denom = (a * b).sum(axis=0), norm_a * norm_b
    else:
        num, denom = a.T @ b, np.outer(norm_a, norm_b)
    out = np.full(num.shape, constant, dtype=np.float64)
    np.divide(num, denom, out=out, where=denom > 0)
    return np.clip(out, -1.0, 1.0)


def gene_positions(var_names: Any, genes: str | Any) -> np.ndarray:
    """Row positions of ``genes`` (one name or several) in ``var_names``, in the order given.

    A name that is not there is a ``KeyError`` naming (up to five of) the missing genes.
    """
    pos = {str(g): i for i, g in enumerate(var_names)}
    wanted = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    missing = [g for g in wanted if g not in pos]
    if missing:
        shown = ", ".join(repr(g) for g in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise KeyError(
            f"Gene(s) not in adata.var_names: {shown}{more}. Pass names as they appear in "
            "adata.var_names (the fit's genes)."
        )
    return np.array([pos[g] for g in wanted], dtype=np.int64)


def dense_chunks(
    x: Any, chunk_size: int = 4096, dtype: type = np.float32
) -> Iterator[tuple[slice, np.ndarray]]:
    """Dense row chunks of a dense, sparse or backed matrix, as ``dtype``.

    Only one chunk is densified at a time, so sparse and on-disk matrices are never
    densified whole.
    """
    n = x.shape[0]
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        yield sl, to_dense(x[sl], dtype)


def to_dense(block: Any, dtype: type = np.float32) -> np.ndarray:
    """A dense numpy array of a slice of any storage (numpy, scipy sparse, dask, h5py)."""
    if hasattr(block, "compute"):  # dask: the slice is lazy
        block = block.compute()
    if sparse.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)


#: Name parts of the temporary files of :func:`atomic_write`: hidden, never the
#: target's own suffix (a ``*.h5ad`` glob or a figure viewer never picks one up).
TMP_PREFIX, TMP_SUFFIX = ".", ".spexlvm-tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file all at once or not at all: the one writer of every file spexlvm writes.

    Yields a temporary path in the target's folder (``.NAME.XXXXXXXX.spexlvm-tmp``,
    hidden) to write to; when the block ends without an error the file is flushed to disk
    and renamed onto ``path`` with :func:`os.replace` (atomic on POSIX and Windows). Until
    then ``path`` keeps its previous content: a process killed while writing (SIGKILL,
    power loss) leaves the old file intact and at most a hidden temporary file; an error
    in the block removes the temporary file. A symbolic link at ``path`` is followed (its
    target is replaced, the link stays). The new file gets the old file's permissions, or
    the usual ones (``0o666`` less the umask) when there was none.

    Writers that choose a format from the file name (matplotlib's ``savefig``) must be
    given the format explicitly: the temporary name ends in ``.spexlvm-tmp``.

    Examples
    --------
    >>> with atomic_write("out.h5ad") as tmp:  # doctest: +SKIP
    ...     adata.write_h5ad(tmp)
    """
    target = Path(os.path.realpath(os.fspath(path)))
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name.")
    fd, name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{target.name}.", suffix=TMP_SUFFIX, dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with open(tmp, "r+b") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(model: Any, dir_path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``model.save(dir_path, overwrite=True, **kwargs)``, whole or not at all.

    scvi-tools writes a model as a folder of files. It is written into a hidden temporary
    folder beside ``dir_path`` and moved into place with :func:`os.replace` when complete;
    an old folder at ``dir_path`` is first moved aside under a hidden name and removed
    only after the new one is in place (a folder cannot be swapped in one step on POSIX:
    a process killed between the two renames leaves the old model under
    ``.NAME.*.spexlvm-old``, never a half-written one at ``dir_path``). An error while
    saving removes the temporary folder and leaves ``dir_path`` as it was.
    """
    import shutil

    target = Path(os.path.realpath(os.fspath(dir_path)))
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{dir_path} is a file; a model is saved as a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(
            prefix=f"{TMP_PREFIX}{target.name}.", suffix=TMP_SUFFIX, dir=target.parent
        )
    )
    try:
        model.save(str(tmp), overwrite=True, **kwargs)
        old = None
        if target.exists():
            old = Path(
                tempfile.mkdtemp(
                    prefix=f"{TMP_PREFIX}{target.name}.", suffix=".spexlvm-old", dir=target.parent
                )
            )
            old.rmdir()
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_h5ad(adata: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``adata.write_h5ad(path, **kwargs)`` through :func:`atomic_write` (all or nothing)."""
    with atomic_write(path) as tmp:
        adata.write_h5ad(tmp, **kwargs)


def user_stacklevel() -> int:
    """``stacklevel`` of :func:`warnings.warn` that points at the first caller outside spexlvm.

    Call it in the function that warns; the warning then names the user's line, whether
    the user called that function directly or through :func:`spexlvm.tl.fit` or the CLI.
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    wrappers = {os.path.abspath(contextlib.__file__)}  # decorators that are context managers
    frame, level = sys._getframe(1), 1
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(package) or path in wrappers):
            break
        frame, level = frame.f_back, level + 1
    return level
