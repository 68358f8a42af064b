"""The ``tfopt`` command: ``tfopt bench``, ``tfopt run``, ``tfopt problems``.

Arguments are checked before TensorFlow is imported, so ``--help`` and argument
errors need no TensorFlow of their own. A bad argument exits with status 2 and
one line on stderr naming the valid choices; never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

PROG = "tfopt"

OPTIMIZERS = {"gradient_descent": "GradientDescent", "momentum": "Momentum", "adam": "Adam"}
"""Command-line names of the optimizers -> ``tfopt.RULES`` names."""
_ALIASES = {"gd": "gradient_descent", "sgd": "gradient_descent", "gradientdescent": "gradient_descent"}

PROBLEMS = ("quartic", "himmelblau", "rosenbrock", "beale", "booth", "rastrigin", "ackley", "goldstein_price",
            "six_hump_camel")
"""``tfopt.problems.names()``, spelled out so that checking a name needs no TensorFlow (a test keeps them equal)."""

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

EXAMPLES = """\
examples:
  tfopt bench                       run the convergence benchmark, report in ./tfopt-report
  tfopt bench --quick --out /tmp/r  a few-seconds subset
  tfopt run --optimizer adam --learning-rate 0.1 --problem himmelblau --init -4,0 --plot adam.png
  tfopt problems                    list the test problems and their minima
"""


class UsageError(Exception):
    """A bad argument found after parsing (e.g. an --init of the wrong length); exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------- argument types
def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def optimizer_name(text: str) -> str:
    key = _normal(text)
    key = _ALIASES.get(key, key)
    if key not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"unknown optimizer {text!r}; choose from {', '.join(OPTIMIZERS)}")
    return key


def problem_name(text: str) -> str:
    key = _normal(text)
    if key not in PROBLEMS:
        raise argparse.ArgumentTypeError(f"unknown problem {text!r}; choose from {', '.join(PROBLEMS)}")
    return key


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number (e.g. 0.1 or 1e-3)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1 (e.g. 2000)")
    return value


def point(text: str) -> tuple[float, ...]:
    """'-4,0' -> (-4.0, 0.0); brackets and spaces are allowed."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"malformed {text!r}; give comma-separated numbers, e.g. --init=-4,0 "
                                         "(one number per dimension)")
    return values


def plot_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"cannot write a figure to {text!r}; the file must end in "
                                         f"{', '.join(PLOT_SUFFIXES)}")
    _check_writable(path.parent, text, create=False)
    return path


def _check_writable(folder: Path, what: str, create: bool) -> None:
    """Raise ArgumentTypeError unless files can be written in ``folder`` (created if ``create``)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise FileNotFoundError(f"no folder {str(folder)!r}")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise argparse.ArgumentTypeError(f"cannot write to {what!r}: {reason}; choose a writable folder") from None


def output_folder(text: str) -> Path:
    path = Path(text).expanduser()
    _check_writable(path, text, create=True)
    return path


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Write, run and compare gradient-based optimizers in TensorFlow: "
                     "the convergence lab.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    bench = commands.add_parser(
        "bench", help="run the convergence benchmark and write its report (the main job)",
        description="Run GradientDescent, Momentum and Adam at learning rates 1e-3, 1e-2, 1e-1 on every test "
        "problem from its default start, plus a basin map; print the table and write report.md, results.csv, "
        "results.json and the figures (PNG) to DIR.")
    bench.add_argument("--out", metavar="DIR", type=output_folder, default=Path("tfopt-report"),
                       help="folder for the report (created if needed; default: ./tfopt-report)")
    bench.add_argument("--quick", action="store_true", help="a few-seconds subset: two problems, a small basin map")
    bench.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    bench.set_defaults(run=_bench)

    run = commands.add_parser(
        "run", help="run one optimizer on one problem and print the outcome",
        description="Run one optimizer on one test problem until it converges, explodes or reaches --max-iters, "
        "and print how it stopped.",
        epilog="example: tfopt run --optimizer adam --learning-rate 0.1 --problem himmelblau --init -4,0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--optimizer", required=True, type=optimizer_name, metavar="NAME",
                     help=f"one of: {', '.join(OPTIMIZERS)}")
    run.add_argument("--learning-rate", "--lr", required=True, type=positive_number, metavar="LR",
                     help="a positive number, e.g. 0.1")
    run.add_argument("--problem", required=True, type=problem_name, metavar="NAME",
                     help="a test problem: " + ", ".join(PROBLEMS))
    run.add_argument("--init", type=point, metavar="X[,Y]",
                     help="the start, comma-separated (default: the problem's default start)")
    run.add_argument("--max-iters", type=positive_int, default=2000, metavar="N",
                     help="iteration budget (default: 2000)")
    run.add_argument("--plot", type=plot_file, metavar="FILE",
                     help=f"also draw the path and the loss curve to FILE ({', '.join(PLOT_SUFFIXES)})")
    run.set_defaults(run=_run)

    problems = commands.add_parser("problems", help="list the test problems with their minima",
                                   description="List the test problems: dimension, minimum value, default start, "
                                   "known global minima and formula.")
    problems.set_defaults(run=_problems)
    return parser


def _join_option_values(argv: Sequence[str]) -> list[str]:
    """Let ``--init -4,0`` through: argparse would read ``-4,0`` as an option, so join it as ``--init=-4,0``."""
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--init" and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"--init={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tfopt`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(_join_option_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help (0) or a bad argument (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.run(args)
    except UsageError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. the disk filled up while writing the report
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1


# ----------------------------------------------------------------- commands
def _quiet_tensorflow():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # tf.function retracing notes are expected here: one trace per batch


def _bench(args) -> int:
    _quiet_tensorflow()
    from tfopt import bench

    report = bench.run_benchmark(args.out, quick=args.quick, progress=args.progress)
    print(f"\nReport written to {(report.out_dir / 'report.md').resolve()}")
    print(f"  (with results.csv, results.json and {sum(p.suffix == '.png' for p in report.files)} PNG figures "
          f"in {report.out_dir.resolve()})")
    return 0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.7g}" for v in values) + ")"


def _run(args) -> int:
    from tfopt import problems as problems_lib

    problem = problems_lib.get(args.problem)
    init = args.init if args.init is not None else problem.default_init
    if len(init) != problem.dim:
        raise UsageError(f"--init has {len(init)} number{'s' * (len(init) != 1)} but {problem.name} has dim "
                         f"{problem.dim}; give {problem.dim} comma-separated number{'s' * (problem.dim != 1)}, "
                         f"e.g. --init={','.join(f'{v:g}' for v in problem.default_init)}")
    _quiet_tensorflow()
    import numpy as np

    import tfopt
    from tfopt.harness import convergence_test

    name = OPTIMIZERS[args.optimizer]
    optimizer = tfopt.RULES[name](learning_rate=args.learning_rate)
    result = convergence_test(optimizer, problem, init=np.asarray(init, dtype=np.float32),
                              max_iters=args.max_iters, record_path=args.plot is not None)
    label = f"{name} lr={args.learning_rate:g}"
    how = {"converged": f"converged after {result.iterations} iterations (an update left x unchanged)",
           "exploded": f"exploded at iteration {result.iterations} (NaN or Inf)",
           "max_iters": f"max_iters: still moving after {result.iterations} iterations"}
    print(f"{label} on {problem.name} from {_fmt(init)}")
    print(f"  status:           {how.get(result.status, result.status)}")
    print(f"  x_final:          {_fmt(result.x_final)}")
    print(f"  loss_final:       {result.loss_final:.7g}   (f_min {problem.f_min:.7g}, "
          f"gap {result.loss_final - problem.f_min:.3g})")
    if result.status != "exploded" and result.nearest_minimum is not None:
        print(f"  nearest minimum:  {_fmt(result.nearest_minimum)} at distance {result.distance_to_minimum:.3g}")
    print(f"  wall time:        {result.wall_time:.2f} s (tracing included)")
    if args.plot is not None:
        _plot_run(result, problem, label, args.plot, init)
        print(f"Figure written to {args.plot.resolve()}")
    return 0


def _plot_run(result, problem, label, path, init):
    from matplotlib.figure import Figure

    from tfopt import plotting

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    draw = plotting.plot_paths_1d if problem.dim == 1 else plotting.plot_paths_2d
    draw({label: result}, problem, ax=left, init=init)
    plotting.plot_loss_curves({label: result}, ax=right, problem=problem)
    plotting.save_figure(fig, path)


def _problems(args) -> int:
    from tfopt import problems as problems_lib

    rows = [(p.name, str(p.dim), f"{p.f_min:.7g}", _fmt(p.default_init), ", ".join(_fmt(m) for m in p.minima))
            for p in problems_lib.ALL.values()]
    header = ("name", "dim", "f_min", "default start", "known global minima")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[-1])
    for row, problem in zip(rows, problems_lib.ALL.values()):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        print(" " * 4 + problem.description)
    print(f"\n{len(rows)} problems; use a name with: tfopt run --problem NAME ...")
    return 0
