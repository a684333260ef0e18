"""Run every benchmark in this folder (``nox -s bench``) and print Markdown tables.

Quick versions by default (a few minutes on two cores); ``--full`` runs the sizes that
``benchmarks/RESULTS.md`` reports (about an hour on two cores, most of it MuVI). The
comparison with MuVI runs only where MuVI's environment exists (``--muvi-python``, else
``$MUVI_PYTHON``, else ``../muvi-venv/bin/python`` beside the repository; see
``compare_muvi.py``); otherwise it is skipped with a message.

The numbers go into ``benchmarks/RESULTS.md`` together with the machine and the date.

Usage::

    python benchmarks/run.py            # quick
    python benchmarks/run.py --full     # the reported sizes
    nox -s bench -- --full
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
QUICK = [
    ["fit_time.py", "--n-obs", "2000", "--n-vars", "1000", "--n-factors", "20"],
    ["pbmc_auroc.py", "--seeds", "0", "1", "2", "3", "4"],
    ["paper_size.py", "--n-obs", "2000", "--n-vars", "1000", "--n-factors", "20"],
    ["scaling.py", "--quick"],
    ["compare_muvi.py", "--cases", "a", "--seeds", "0"],
]
FULL = [
    ["fit_time.py", "--n-obs", "2000", "--n-vars", "1000", "--n-factors", "20"],
    ["pbmc_auroc.py", "--seeds", "0", "1", "2", "3", "4"],
    ["paper_size.py", "--seeds", "0", "1", "2"],
    ["scaling.py"],
    ["ddp_resume.py"],
    # builds ~11 GiB of .h5ad under $SPEXLVM_ATLAS_DIR (default /work/scratch/spexlvm_atlas)
    [
        "atlas.py",
        "--n-obs",
        "1000000",
        "--max-epochs",
        "60",
        "--subset",
        "100000",
        "--scaling",
        "10000",
        "30000",
        "100000",
        "300000",
        "1000000",
    ],
    ["compare_muvi.py", "--cases", "a", "b", "--seeds", "0", "1", "2"],
]


def default_muvi_python() -> Path:
    """MuVI's interpreter, as ``compare_muvi.default_muvi_python`` finds it (no imports)."""
    env = os.environ.get("MUVI_PYTHON")
    if env:
        return Path(env)
    return HERE.resolve().parent.parent / "muvi-venv" / "bin" / "python"


def main() -> int:
    """Run the scripts one after the other; stop at the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the sizes reported in RESULTS.md")
    parser.add_argument("--muvi-python", default=None, help="MuVI's interpreter")
    args = parser.parse_args()

    muvi_python = Path(args.muvi_python) if args.muvi_python else default_muvi_python()
    for script, *script_args in FULL if args.full else QUICK:
        if script == "compare_muvi.py":
            if not muvi_python.is_file():
                print(
                    f"\n## {script}: skipped, MuVI's environment not found ({muvi_python}). "
                    "Create it as the docstring of benchmarks/compare_muvi.py says, or pass "
                    "--muvi-python / set MUVI_PYTHON.\n",
                    flush=True,
                )
                continue
            script_args = [*script_args, "--muvi-python", str(muvi_python)]
        print(f"\n## {script} {' '.join(script_args)}\n", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *script_args], check=False)
        if result.returncode:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
