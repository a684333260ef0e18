"""Run every benchmark in this folder (``nox -s bench``) and print Markdown tables.

The numbers go into ``benchmarks/RESULTS.md`` together with the machine and the date.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ["fit_time.py", "--n-obs", "2000", "--n-vars", "1000", "--n-factors", "20"],
    ["pbmc_auroc.py", "--seeds", "0", "1", "2", "3", "4"],
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
]


def main() -> int:
    """Run the scripts one after the other; stop at the first failure."""
    for script, *args in SCRIPTS:
        print(f"\n## {script} {' '.join(args)}\n", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *args], check=False)
        if result.returncode:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
