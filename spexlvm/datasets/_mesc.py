"""Mouse embryonic stem cells with FACS cell-cycle stages (Buettner et al. 2015)."""

from __future__ import annotations

import logging
from importlib.resources import as_file, files

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["mesc"]

_FILE = "buettner_mesc.csv.gz"
#: Row-index codes of the file -> cell-cycle stage.
_STAGES = {1: "G1", 2: "S", 3: "G2M"}


def mesc() -> AnnData:
    """Mouse embryonic stem cells sorted by cell-cycle stage (spex-LVM paper, section 3.2).

    182 mESCs x 6,635 genes from Buettner et al. (2015), *Nat Biotech* 33:155-160,
    bundled with the package (``spexlvm/data/buettner_mesc.csv.gz``). The values are
    log-scale expression as distributed with the spex-LVM / MuVI reference code (between
    0 and about 5.1, about 45% zeros, no missing values); they are used as they are.
    The stage of every cell was determined by FACS before sequencing: 59 G1, 58 S and
    65 G2/M cells.

    Returns
    -------
    AnnData with

    ``X``
        float32 log-scale expression, cells x genes.
    ``obs["stage"]``
        Categorical cell-cycle stage, categories ``["G1", "S", "G2M"]``.
    ``obs_names``
        ``cell_0..cell_181``, in the file's order (sorted by stage).
    ``var_names``
        Mouse gene symbols (made unique if the file repeats one; renames are logged).
        Upper-casing maps most of them to human symbols, e.g. for MSigDB gene sets.

    Examples
    --------
    >>> import spexlvm
    >>> adata = spexlvm.datasets.mesc()
    >>> adata.obs["stage"].value_counts(sort=False).to_dict()
    {'G1': 59, 'S': 58, 'G2M': 65}
    """
    with as_file(files("spexlvm") / "data" / _FILE) as path:
        df = pd.read_csv(path, index_col=0)
    codes = df.index.to_numpy()
    unknown = sorted(set(codes.tolist()) - set(_STAGES))
    if unknown:
        raise ValueError(f"{_FILE}: unexpected stage codes {unknown}.")
    stage = pd.Categorical([_STAGES[c] for c in codes], categories=list(_STAGES.values()))

    adata = AnnData(
        X=df.to_numpy(dtype=np.float32),
        obs=pd.DataFrame({"stage": stage}, index=pd.Index([f"cell_{i}" for i in range(len(df))])),
        var=pd.DataFrame(index=pd.Index(df.columns.astype(str))),
    )
    if not adata.var_names.is_unique:
        before = adata.var_names.to_numpy()
        adata.var_names_make_unique()
        renamed = {
            old: new for old, new in zip(before, adata.var_names, strict=True) if old != new
        }
        logger.info("mesc: made %d gene symbols unique: %s", len(renamed), renamed)
    return adata
