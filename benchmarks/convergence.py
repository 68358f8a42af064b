"""The convergence benchmark: GradientDescent, Momentum, Adam x learning rates x test problems.

    python benchmarks/convergence.py [--out DIR] [--quick]

is the same as ``tfopt bench [--out DIR] [--quick]``: it prints the table and writes
``report.md``, ``results.csv``, ``results.json`` and the figures to DIR
(default ``./tfopt-report``). The suite, the measures and how runs are batched are
described in ``tfopt/lab/bench.py``; from Python, call ``tfopt.lab.bench.run_benchmark``.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # run from a checkout without installing
    import tfopt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfopt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
