"""Default AnnData keys and registry names, in one place (see the key table in the docs)."""

from __future__ import annotations

from typing import NamedTuple


class _Keys(NamedTuple):
    #: ``adata.varm`` / ``adata.uns`` key of the gene-set annotation mask.
    MASK: str = "spexlvm_mask"
    #: ``adata.obsm`` key of the factor scores.
    FACTORS: str = "X_spexlvm"
    #: ``adata.varm`` key of the loadings.
    LOADINGS: str = "spexlvm_loadings"
    #: ``adata.uns`` key of the fit summary (factor names, R², parameters, tool results).
    UNS: str = "spexlvm"


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    #: scvi-tools' names of the covariate fields (``setup_anndata(batch_key=...)``, ...).
    BATCH_KEY: str = "batch"
    CAT_COVS_KEY: str = "extra_categorical_covs"
    CONT_COVS_KEY: str = "extra_continuous_covs"


KEYS = _Keys()
REGISTRY_KEYS = _RegistryKeys()

#: Prefixes of the unannotated factors' names.
SPARSE_PREFIX = "sparse_"
DENSE_PREFIX = "dense_"

#: Default upper bound of the learned weight ``rho`` of the scores' prior correlation
#: (:class:`~spexlvm.SpexLVM`'s ``score_overlap_max``): none. benchmarks/RESULTS.md, "The
#: learned prior correlation creeps towards 1".
SCORE_OVERLAP_MAX = 1.0

#: The default inference engine of :meth:`SpexLVM.train <spexlvm.SpexLVM.train>`, ``tl.fit``
#: and ``spexlvm fit``: coordinate ascent since 2026-12-04, when it met the rule written for
#: the switch on fresh draws of the choice data (C8 signatures on PBMC, seeds 21-32;
#: benchmarks/RESULTS.md, "Coordinate ascent as the default engine, a fourth and a fifth
#: look").
DEFAULT_ENGINE = "cavi"
