"""Command line: ``spexlvm fit`` (an .h5ad and a GMT in, an .h5ad out) and ``spexlvm demo``.

Run ``spexlvm --help`` or ``python -m spexlvm.cli --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._constants import DEFAULT_ENGINE, SCORE_OVERLAP_MAX

# the demo and the summary helpers spexlvm fit shares with it; run_demo and the demo's
# constants are re-exported (they were defined here)
from ._demo import (
    DEMO_FILES,
    DEMO_MIN_GENES,
    DEMO_TARGETS,
    N_SUMMARY,
    QUICK_EPOCHS,
    log_top_factors,
    run_demo,
    save_bar_chart,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("spexlvm.cli")

__all__ = [
    "DEMO_FILES",
    "DEMO_MIN_GENES",
    "DEMO_TARGETS",
    "N_SUMMARY",
    "QUICK_EPOCHS",
    "main",
    "run_demo",
]

#: Exit codes: success, internal error, user error (bad input; argparse uses 2 too).
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2

#: Bundled gene-set collections accepted by ``--gene-sets``.
_COLLECTIONS = ("hallmark", "reactome")


class CLIError(Exception):
    """A problem with the user's input: reported without a traceback, exit code 2."""


# ---------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------


def _version() -> str:
    from ._utils import package_version

    return package_version()


def _verbosity_parent(suppress: bool) -> argparse.ArgumentParser:
    """``-v`` / ``-q``, accepted before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="Show debug messages, third-party logs and tracebacks.",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="Show warnings and errors only.",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``spexlvm`` command."""
    parser = argparse.ArgumentParser(
        prog="spexlvm",
        description=(
            "spex-LVM: interpretable factor analysis of single-cell data, with one factor "
            "per gene set (regularised horseshoe priors informed by gene-set annotations)."
        ),
        epilog="Run 'spexlvm COMMAND --help' for the options of a command.",
        parents=[_verbosity_parent(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"spexlvm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _verbosity_parent(suppress=True)

    fit = sub.add_parser(
        "fit",
        parents=[common],
        help="Fit spex-LVM to an .h5ad file and write the factors to a new .h5ad.",
        description=(
            "Read IN.h5ad (cells x genes, log-normalised expression), add the gene sets, "
            "fit spex-LVM and write OUT.h5ad with obsm['X_spexlvm'] (factor scores), "
            "varm['spexlvm_loadings'] (loadings) and uns['spexlvm'] (factor names, R², "
            "settings), and next to it OUT_scores.tsv, OUT_loadings.tsv and "
            "OUT_refined.gmt (unless --no-tables)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.add_argument("input", metavar="IN.h5ad", help="Input AnnData file.")
    fit.add_argument(
        "--gene-sets",
        metavar="SETS",
        help=(
            "A GMT file; a long-format CSV/TSV network (.csv / .tsv, optionally .gz) with "
            "the columns source,target[,weight] (decoupler's format, e.g. "
            "dc.op.collectri(...).to_csv(...); the signs of 'weight' orient the factors); "
            "or 'hallmark' / 'reactome' for the bundled MSigDB collections. "
            "Optional when IN.h5ad already holds varm['spexlvm_mask']."
        ),
    )
    fit.add_argument(
        "--out",
        "-o",
        metavar="OUT.h5ad",
        required=True,
        help=(
            "Output file, written to a temporary file and renamed into place (a killed run "
            "leaves the previous file intact); may be IN.h5ad itself, except with --backed."
        ),
    )
    fit.add_argument("--layer", help="Layer to fit instead of X.")
    fit.add_argument("--n-sparse", type=int, default=0, help="Unannotated sparse factors.")
    fit.add_argument("--n-dense", type=int, default=0, help="Unannotated dense factors.")
    fit.add_argument(
        "--prior-confidence",
        "--confidence",
        dest="prior_confidence",
        type=float,
        default=0.99,
        action=_DeprecatedAlias,
        help=(
            "Prior confidence in the annotation, in (0, 1) (prior_confidence of "
            "spexlvm.tl.fit; --confidence is a deprecated alias)."
        ),
    )
    fit.add_argument(
        "--max-epochs", type=int, help="Maximum epochs (default: chosen from the data size)."
    )
    fit.add_argument(
        "--batch-size", type=int, help="Cells per minibatch (default: chosen from the data size)."
    )
    fit.add_argument(
        "--engine",
        choices=("adam", "cavi"),
        default=DEFAULT_ENGINE,
        help=(
            "Inference engine (engine of SpexLVM.train): cavi (coordinate ascent, one exact "
            "update per pass through the data; default) or adam (minibatch gradient steps)."
        ),
    )
    fit.add_argument(
        "--score-overlap",
        type=float,
        default=0.3,
        help=(
            "Weight of the prior correlation of related gene sets' scores, in [0, 1) "
            "(score_overlap of spexlvm.SpexLVM): where it starts when learned (the "
            "default), its value with --no-learn-score-overlap (0 with it: independent "
            "scores, as in the paper)."
        ),
    )
    fit.add_argument(
        "--learn-score-overlap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "Learn that weight from the data (empirical Bayes; learn_score_overlap of "
            "spexlvm.SpexLVM). Default: learned."
        ),
    )
    fit.add_argument(
        "--score-overlap-max",
        type=float,
        default=SCORE_OVERLAP_MAX,
        help=(
            "Upper bound of that weight, in (0, 1] (score_overlap_max of spexlvm.SpexLVM): "
            f"default {SCORE_OVERLAP_MAX}."
        ),
    )
    fit.add_argument(
        "--score-overlap-basis",
        choices=["data", "exclusive", "genes"],
        default="data",
        help=(
            "Which sets are related: by the correlation of their mean expression in the "
            "data (default), the same on the genes two sets do not share (exclusive), or "
            "by the genes they share (score_overlap_basis of "
            "spexlvm.SpexLVM)."
        ),
    )
    fit.add_argument("--seed", type=int, default=0, help="Random seed.")
    fit.add_argument(
        "--min-genes", type=int, default=1, help="Drop gene sets with fewer genes found."
    )
    fit.add_argument("--max-genes", type=int, help="Drop gene sets with more genes found.")
    case = fit.add_mutually_exclusive_group()
    case.add_argument(
        "--case-insensitive",
        dest="case_sensitive",
        action="store_const",
        const=False,
        help=(
            "Match gene names ignoring case (e.g. mouse genes against human sets). Default: "
            "automatic, ignoring case (with a warning) when that finds many more genes."
        ),
    )
    case.add_argument(
        "--case-sensitive",
        dest="case_sensitive",
        action="store_const",
        const=True,
        help="Match gene names exactly (turns the automatic choice off).",
    )
    fit.add_argument(
        "--gene-symbols",
        metavar="COL",
        help="Column of var holding the gene names to match (default: var_names).",
    )
    fit.add_argument(
        "--nested",
        choices=("keep", "merge", "resolve"),
        default="keep",
        help=(
            "Gene sets inside others: 'keep' (default) keeps every set its own factor under "
            "its own name; 'merge' merges a set that makes up at least half of the set it "
            "lies in (the factor is named 'LARGER + NESTED'); 'resolve' also leaves a "
            "smaller nested set its genes in the prior."
        ),
    )
    fit.add_argument(
        "--batch-key",
        metavar="COL",
        help=(
            "obs column of the batch: fitted as a known (fixed) effect next to the factors, "
            "so that no factor has to take it."
        ),
    )
    fit.add_argument(
        "--categorical-covariate-keys",
        nargs="+",
        metavar="COL",
        help="Further categorical obs columns fitted as known effects (donor, sample, ...).",
    )
    fit.add_argument(
        "--continuous-covariate-keys",
        nargs="+",
        metavar="COL",
        help=(
            "Continuous obs columns fitted as known effects (log library size, percent "
            "mitochondrial reads, ...)."
        ),
    )
    fit.add_argument(
        "--accelerator",
        default="auto",
        help="Lightning accelerator: auto (GPU when available), cpu, gpu, ...",
    )
    fit.add_argument(
        "--backed",
        action="store_true",
        help="Leave X on disk (read in chunks): for files larger than memory.",
    )
    fit.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help=(
            "Save checkpoints here while training; run the same command again to resume an "
            "interrupted fit (e.g. after a cluster time limit)."
        ),
    )
    fit.add_argument(
        "--no-tables",
        action="store_true",
        help=(
            "Do not write OUT_scores.tsv (cells x factors), OUT_loadings.tsv (genes x "
            "factors) and OUT_refined.gmt (the gene sets refined by spexlvm.tl.refined_gene_sets) "
            "next to OUT.h5ad."
        ),
    )
    fit.add_argument("--save-model", metavar="DIR", help="Also save the trained model here.")
    fit.add_argument(
        "--figure", metavar="PNG", help="Also save a variance-explained bar chart here."
    )
    fit.set_defaults(func=_cmd_fit)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="Fit the bundled PBMC data with Reactome gene sets and write figures and a summary.",
        description=(
            "Fit spex-LVM to scanpy's bundled pbmc68k_reduced (700 PBMCs, 765 genes) with the "
            "bundled Reactome gene sets (those with at least 10 genes found) and one dense "
            "factor, seed 0. Writes DIR/" + ", DIR/".join(DEMO_FILES) + ". The summary "
            "compares, by AUROC, how well the MHC class II and B cell receptor factors pick "
            "out dendritic and B cells with scanpy's score_genes scores of the same sets."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--out", "-o", metavar="DIR", default="spexlvm_results", help="Output directory."
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"Train only {QUICK_EPOCHS} epochs: a fast smoke test, not a converged fit.",
    )
    demo.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ..."
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


# ---------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------

#: Third-party loggers that are quiet unless --verbose.
_NOISY_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
    "scvi",
)
#: Modules whose Python warnings are hidden unless --verbose.
_NOISY_WARNING_MODULES = r"(lightning|pytorch_lightning|scvi|torch|pyro)(\.|$)"


class _Formatter(logging.Formatter):
    """The bare message for INFO (the normal output), ``LEVEL: message`` otherwise."""

    def __init__(self, verbose: bool):
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.verbose and record.levelno != logging.INFO:
            text = f"{record.levelname}: {text}"
        return text


@contextlib.contextmanager
def _logging(verbose: bool, quiet: bool) -> Iterator[None]:
    """Messages of spexlvm on stderr; third-party chatter hidden unless verbose.

    Restores the previous logging and warnings state on exit, so that :func:`main` can
    run in-process (tests, notebooks).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(verbose))
    package = logging.getLogger("spexlvm")
    loggers = [package] + [logging.getLogger(name) for name in _NOISY_LOGGERS]
    saved = [(log, log.level, log.propagate) for log in loggers]
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    for log in loggers[1:]:
        log.setLevel(logging.DEBUG if verbose else logging.ERROR)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.filterwarnings("ignore", module=_NOISY_WARNING_MODULES)
            yield
    finally:
        package.removeHandler(handler)
        for log, lvl, propagate in saved:
            log.setLevel(lvl)
            log.propagate = propagate


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _read_h5ad(path: str, *, backed: bool = False) -> AnnData:
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise CLIError(f"Input file not found: {path}")
    if p.is_dir():
        raise CLIError(f"Input is a directory, not an .h5ad file: {path}")
    try:
        adata = ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as err:  # h5py / anndata raise many types for a bad file
        raise CLIError(f"Cannot read {path} as an .h5ad file: {err}") from err
    logger.info("Read %s: %d cells x %d genes.", path, adata.n_obs, adata.n_vars)
    return adata


def _writable(path: str | os.PathLike[str], what: str) -> Path:
    """Create the parent folder of an output file, failing early with a clear message."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{what} {p} is a directory; give a file name.")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"Cannot create the folder of {what} {p}: {err}") from err
    if not os.access(p.parent, os.W_OK):
        raise CLIError(f"Cannot write {what} {p}: the folder is not writable.")
    return p


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (relative paths, symbolic and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


#: Deprecated option strings -> their new names.
_RENAMED_OPTIONS = {"--confidence": "--prior-confidence"}


class _DeprecatedAlias(argparse.Action):
    """Store the value; log a deprecation warning when given under its old name."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in _RENAMED_OPTIONS:  # logged once logging is set up
            used = list(getattr(namespace, "deprecated_options", []))
            namespace.deprecated_options = [*used, option_string]
        setattr(namespace, self.dest, values)


def _warn_deprecated(args: argparse.Namespace) -> None:
    for option in getattr(args, "deprecated_options", []):
        logger.warning(
            "%s is deprecated; use %s (the name of the API's argument).",
            option,
            _RENAMED_OPTIONS[option],
        )


#: Suffixes of a long-format network file (``.gz`` allowed after them) and their separator.
_TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def _read_network(path: Path) -> Any:
    """A long-format CSV/TSV network (source, target[, weight]) as a DataFrame."""
    import pandas as pd

    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    sep = _TABLE_SEPARATORS[suffixes[-1]]
    try:
        net = pd.read_csv(path, sep=sep)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise CLIError(f"--gene-sets {path}: cannot read it as a table: {err}") from err
    if "source" not in net.columns or "target" not in net.columns:
        raise CLIError(
            f"--gene-sets {path}: a network table needs the columns source and target "
            f"(optionally weight), found {list(net.columns)[:8]}. Write it with "
            "net.to_csv(path, index=False) (decoupler's long format), or give a GMT file."
        )
    logger.info(
        "Read %d (set, gene) rows of %d sets from %s%s.",
        len(net),
        net["source"].nunique(),
        path,
        " (signed: 'weight')" if "weight" in net.columns else "",
    )
    return net


def _is_network(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in _TABLE_SEPARATORS


def _gene_sets_arg(value: str) -> Any:
    """Resolve ``--gene-sets``: a GMT path, a CSV/TSV network or a bundled collection."""
    import spexlvm

    if Path(value).is_file():
        if _is_network(Path(value)):
            return _read_network(Path(value))
        return value
    if value.lower() in _COLLECTIONS:
        return spexlvm.datasets.gene_sets(value.lower())
    raise CLIError(
        f"--gene-sets {value!r}: no such file, and not one of the bundled collections "
        f"({', '.join(_COLLECTIONS)})."
    )


def _progress_bar(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


# ---------------------------------------------------------------------------------------
# spexlvm fit
# ---------------------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    _warn_deprecated(args)
    out = _writable(args.out, "Output")
    figure = _writable(args.figure, "Figure") if args.figure else None
    if args.backed and Path(args.input).is_file() and _same_file(out, args.input):
        # X would be read from the file that the output replaces
        raise CLIError(
            f"--out {args.out} is the input file (or a link to it); with --backed X is read "
            "from the input while the output is written, so write to another file "
            "(or drop --backed to rewrite the input in place)."
        )
    adata = _read_h5ad(args.input, backed=args.backed)

    import spexlvm
    from spexlvm._constants import KEYS
    from spexlvm._utils import save_model, write_h5ad

    if args.gene_sets is not None:
        sets = _gene_sets_arg(args.gene_sets)
        try:
            spexlvm.pp.add_gene_sets(
                adata,
                sets,
                min_genes=args.min_genes,
                max_genes=args.max_genes,
                gene_symbols=args.gene_symbols,
                case_sensitive=args.case_sensitive,
                nested=args.nested,
            )
        except (KeyError, ValueError, TypeError) as err:
            raise CLIError(f"--gene-sets {args.gene_sets}: {_message(err)}") from err
    elif KEYS.MASK not in adata.varm:
        raise CLIError(
            f"{args.input} has no gene-set annotation (varm[{KEYS.MASK!r}]); give --gene-sets "
            f"SETS.gmt (or one of: {', '.join(_COLLECTIONS)})."
        )
    else:
        logger.info("Using the gene-set annotation in varm[%r].", KEYS.MASK)

    start = time.perf_counter()
    try:
        model = spexlvm.tl.fit(
            adata,
            None,
            n_sparse=args.n_sparse,
            n_dense=args.n_dense,
            prior_confidence=args.prior_confidence,
            layer=args.layer,
            max_epochs=args.max_epochs,
            batch_size=args.batch_size,
            accelerator=args.accelerator,
            seed=args.seed,
            batch_key=args.batch_key,
            categorical_covariate_keys=args.categorical_covariate_keys,
            continuous_covariate_keys=args.continuous_covariate_keys,
            enable_progress_bar=_progress_bar(args),
            checkpoint_dir=args.checkpoint_dir,
            engine=args.engine,
            model_kwargs={
                "score_overlap": args.score_overlap,
                "learn_score_overlap": args.learn_score_overlap,
                "score_overlap_max": args.score_overlap_max,
                "score_overlap_basis": args.score_overlap_basis,
            },
        )
    except (KeyError, ValueError, TypeError) as err:
        raise CLIError(_message(err)) from err
    logger.info("Fitted in %.1f s.", time.perf_counter() - start)
    log_top_factors(adata)

    refined = None if args.no_tables else _refined_sets(adata)
    write_h5ad(adata, out)
    logger.info("Wrote %s.", out)
    if not args.no_tables:
        for path in _write_tables(adata, out, refined):
            logger.info("Wrote %s.", path)
    if args.save_model:
        save_model(model, args.save_model)  # whole or not at all
        logger.info("Saved the model to %s/ (load with spexlvm.SpexLVM.load).", args.save_model)
    if figure is not None:
        save_bar_chart(adata, figure)
        logger.info("Wrote %s.", figure)
    return EXIT_OK


def _table_paths(out: Path) -> dict[str, Path]:
    """The tables written next to ``OUT.h5ad``."""
    stem = out.name[: -len(".h5ad")] if out.name.endswith(".h5ad") else out.name
    return {
        "scores": out.with_name(f"{stem}_scores.tsv"),
        "loadings": out.with_name(f"{stem}_loadings.tsv"),
        "refined": out.with_name(f"{stem}_refined.gmt"),
    }


def _refined_sets(adata: AnnData) -> dict[str, list[str]] | None:
    """The refined gene sets (active factors only), or None when there are none to refine."""
    import spexlvm

    if int(adata.uns["spexlvm"].get("n_annotated", 0)) == 0:
        logger.info("No annotated factor: no refined gene sets to write.")
        return None
    try:
        return spexlvm.tl.refined_gene_sets(adata)
    except (KeyError, ValueError) as err:
        logger.warning("Not writing refined gene sets: %s", _message(err))
        return None


def _write_tables(adata: AnnData, out: Path, refined: dict[str, list[str]] | None) -> list[Path]:
    """Scores and loadings as TSV, the refined gene sets as GMT, next to ``out``."""
    import numpy as np
    import pandas as pd

    from spexlvm._utils import atomic_write

    paths = _table_paths(out)
    names = [str(n) for n in np.asarray(adata.uns["spexlvm"]["factor_names"]).reshape(-1)]
    tables = {
        "scores": pd.DataFrame(
            np.asarray(adata.obsm["X_spexlvm"]),
            index=pd.Index(adata.obs_names, name="cell"),
            columns=names,
        ),
        "loadings": pd.DataFrame(
            np.asarray(adata.varm["spexlvm_loadings"]),
            index=pd.Index(adata.var_names, name="gene"),
            columns=names,
        ),
    }
    written = []
    for what, table in tables.items():
        with atomic_write(paths[what]) as tmp:
            table.to_csv(tmp, sep="\t", float_format="%.6g")
        written.append(paths[what])
    if refined is not None:
        import spexlvm

        spexlvm.tl.write_gmt(refined, paths["refined"], description="refined by spexlvm fit")
        written.append(paths["refined"])
    return written


def _message(err: BaseException) -> str:
    """Return an exception's message (``str(KeyError)`` adds quotes)."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)


# ---------------------------------------------------------------------------------------
# spexlvm demo
# ---------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    """``spexlvm demo``: :func:`spexlvm._demo.run_demo` (checks the output folder first)."""
    outdir = Path(args.out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"Cannot create the output folder {outdir}: {err}") from err
    run_demo(
        args.out,
        quick=args.quick,
        accelerator=args.accelerator,
        enable_progress_bar=_progress_bar(args),
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spexlvm`` command line; returns the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    0 on success, 2 for bad input (missing or unreadable files, invalid options), 1 for
    an unexpected error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    quiet = bool(getattr(args, "quiet", False))
    args.verbose, args.quiet = verbose, quiet
    with _logging(verbose, quiet):
        try:
            return int(args.func(args))
        except CLIError as err:
            _report(err, verbose)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("spexlvm: interrupted.", file=sys.stderr)
            return 130
        except Exception as err:
            if verbose:
                logger.exception("spexlvm %s failed.", args.command)
            else:
                print(
                    f"spexlvm: error: {type(err).__name__}: {_message(err)}\n"
                    "(run with --verbose for the traceback)",
                    file=sys.stderr,
                )
            return EXIT_INTERNAL


def _report(err: CLIError, verbose: bool) -> None:
    if verbose:
        logger.error("%s", err, exc_info=err)
    else:
        print(f"spexlvm: error: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
