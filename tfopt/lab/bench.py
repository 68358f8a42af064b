"""The convergence benchmark: optimizers x learning rates x test problems.

The suite runs ``GradientDescent``, ``Momentum`` and ``Adam`` (or the optimizers you
give: built-in names, import paths ``"package.module:ClassName"``, ``tfopt.Optimizer``
subclasses or instances) at learning rates 1e-3, 1e-2 and 1e-1 (or yours) on every
problem of ``tfopt.problems`` from its default (hard) start, for at most 2,000
iterations, with the harness's default stopping rules (converged when an update
leaves x unchanged; exploded on NaN or Inf).
Per run it records

* ``status`` and ``iterations`` (as ``convergence_test`` reports them);
* ``loss_gap``: final loss minus ``f_min``;
* ``distance``: Euclidean distance from ``x_final`` to the nearest known global minimum;
* ``iters_to_tol``: the speed measure of optimizer benchmarks such as DeepOBS:
  the first iteration after which ``loss - f_min <= TOL`` (1e-3); a run that
  never gets there counts the whole budget (``max_iters``) and has
  ``reached_tol = False``;
* ``wall_time``: seconds of the compiled call that ran it (see below).

Runs are batched: for each optimizer, all problems of one dimension and all
learning rates run as the rows of *one* ``convergence_test`` call (a loss that
applies each problem to its own rows, with one learning rate per row). Rows are
independent, so each row is bit for bit the run a call of its own would make
(``tests/test_bench.py`` checks it); but one call traces and compiles once
instead of once per problem, which is most of the time on these tiny problems.
``wall_time`` is therefore the time of that shared call, tracing included.

A Himmelblau basin map (a grid of starts, one batched call) completes the report.

That is the *analytic* suite, the default. ``suite="train"`` (``tfopt bench --suite train``) runs the
training suite of ``tfopt.lab.train`` instead: real models on scikit-learn's data, time to a validation
target, a performance profile; trials in worker processes or on Ray (``tfopt.lab.parallel``).
``suite="all"`` runs both and writes one report. ``report.md`` is built from ``Section``s, the figures a
reader looks at first coming first, each with one sentence on how to read it; ``extra_sections`` adds yours.

Use it as ``tfopt bench [--out DIR] [--quick] [--suite analytic|train|all] [--workers N] [--ray ADDRESS]
[--optimizer NAME_OR_PATH ...] [--learning-rates LR,...] [--set NAME=VALUE ...]`` or
``python benchmarks/convergence.py``; from Python,
``run_benchmark(out_dir, optimizers=["adam", my_rules.RMSprop], hyperparameters={"rho": 0.8})``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Run", "Report", "Section", "run_suite", "run_basins", "run_benchmark", "iterations_to_tolerance",
           "CSV_COLUMNS", "make_optimizers", "SUITES"]

OPTIMIZERS = ("GradientDescent", "Momentum", "Adam")
LEARNING_RATES = (1e-3, 1e-2, 1e-1)
MAX_ITERS = 2000
TOL = 1e-3
"""A run has *reached the tolerance* after the first update with ``loss - f_min <= TOL``."""

QUICK_PROBLEMS = ("himmelblau", "rosenbrock")
BASIN = {"problem": "himmelblau", "optimizer": "Momentum", "learning_rate": 0.02, "grid": 100}
"""The basin map: momentum at twice the suite's middle learning rate shows every outcome at once."""
QUICK_BASIN_GRID = 30
QUICK_SENSITIVITY_POINTS = 16
"""``--quick``: learning rates of the sensitivity grid (the full run: ``sensitivity.POINTS``)."""
ANIMATED = "himmelblau"
"""The report animates the optimizers on this problem, at the middle of the learning rates."""
STYLE = {"font.size": 16}
"""matplotlib settings for the report's figures (applied in a ``rc_context``, not globally)."""

CSV_COLUMNS = ("problem", "optimizer", "learning_rate", "status", "iterations", "iters_to_tol", "reached_tol",
               "loss_gap", "distance", "wall_time")


@dataclasses.dataclass
class Run:
    """One run of the suite: an optimizer at one learning rate on one problem."""

    problem: str
    optimizer: str
    learning_rate: float
    status: str
    iterations: int
    iters_to_tol: int
    reached_tol: bool
    loss_gap: float
    distance: float
    wall_time: float
    x_final: list
    nearest_minimum: list
    result: Any = dataclasses.field(repr=False, default=None)  # the ConvergenceResult, with path and losses

    @property
    def label(self) -> str:
        return f"{self.optimizer} lr={self.learning_rate:g}"

    def row(self) -> dict:
        """The run as a JSON/CSV row (non-finite floats as None)."""
        out = {k: getattr(self, k) for k in CSV_COLUMNS}
        out["x_final"], out["nearest_minimum"] = self.x_final, self.nearest_minimum
        return {k: _json_number(v) for k, v in out.items()}


@dataclasses.dataclass
class Report:
    """What ``run_benchmark`` made: the analytic runs, the basin map's counts, the training trials and their
    summaries (empty for a suite not run), the files written."""

    runs: list
    basin: dict
    settings: dict
    out_dir: Path
    files: list
    total_time: float
    trials: list = dataclasses.field(default_factory=list)  # the training suite's TrialResults
    summaries: list = dataclasses.field(default_factory=list)  # its Summary per workload and optimizer


# --------------------------------------------------------------- measures
def iterations_to_tolerance(losses: np.ndarray, f_min: float, start_loss: float, max_iters: int,
                            tol: float = TOL) -> tuple[int, bool]:
    """(iteration, reached): the first iteration after which ``loss - f_min <= tol``.

    ``losses[k]`` is the loss after update k + 1. A start already within the
    tolerance gives 0; a run that never reaches it gives ``(max_iters, False)``.
    """
    if start_loss - f_min <= tol:
        return 0, True
    hits = np.flatnonzero(np.asarray(losses, dtype=np.float64) - f_min <= tol)
    return (int(hits[0]) + 1, True) if hits.size else (int(max_iters), False)


def _nearest(x: np.ndarray, minima) -> tuple[np.ndarray, float]:
    minima = np.asarray(minima, dtype=np.float64)
    distances = np.linalg.norm(np.asarray(x, dtype=np.float64)[None] - minima, axis=-1)
    if not np.all(np.isfinite(distances)):
        return np.full(minima.shape[1], np.nan), math.nan
    k = int(np.argmin(distances))
    return minima[k], float(distances[k])


def _json_number(v):
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, list):
        return [_json_number(u) for u in v]
    return v


# ------------------------------------------------------------ optimizers
def _rule_class(spec):
    """The ``tfopt.Optimizer`` subclass of ``spec``: a class, a ``tfopt.RULES`` name or an import path."""
    from tfopt.integrations.keras_optimizer import _check_rule, import_rule

    if isinstance(spec, type):
        return _check_rule(spec, spec.__qualname__)
    return import_rule(spec)


def make_optimizers(optimizers: Sequence = OPTIMIZERS, hyperparameters: dict | None = None) -> dict:
    """``{label: optimizer}`` for the benchmark, in order, labelled by class name.

    ``optimizers``: ``tfopt.RULES`` names (``"Adam"``), import paths (``"package.module:ClassName"``),
    ``tfopt.Optimizer`` subclasses (built with their defaults) or instances (used as they are; a wrapper
    is labelled with its inner optimizer, ``Lookahead(Adam)``).
    ``hyperparameters``: ``{name: value}`` given to every class among them that declares ``name``
    (a hyperparameter or an option); a name that none declares raises ``ValueError`` listing theirs.
    Two different classes of the same name are labelled by their import paths; a repeat is dropped.
    """
    from tfopt.core.hyperparameters import declared as declared_by
    from tfopt.core.optimizer import Optimizer
    from tfopt.integrations.keras_optimizer import rule_path

    hyperparameters = dict(hyperparameters or {})
    entries = []  # (class, instance or None)
    for spec in optimizers:
        if isinstance(spec, Optimizer):
            entries.append((type(spec), spec))
        else:
            cls = _rule_class(spec)
            if all(c is not cls or o is not None for c, o in entries):
                entries.append((cls, None))
    def names_of(cls, instance):  # a wrapper's and its inner optimizers'
        inner = getattr(instance, "inner_optimizer", None)
        own = [d.name for d in declared_by(cls) if d.name != "learning_rate"]
        return own + ([] if inner is None else names_of(type(inner), inner))

    declared = {cls: names_of(cls, instance) for cls, instance in entries}
    if "learning_rate" in hyperparameters:
        raise ValueError("learning_rate is not set as a hyperparameter: give the benchmark's learning_rates.")
    unknown = [name for name in hyperparameters if not any(name in names for names in declared.values())]
    if unknown:
        theirs = "; ".join(f"{cls.__name__}: {', '.join(names) or '(none)'}" for cls, names in declared.items())
        raise ValueError(f"no optimizer here has a hyperparameter {unknown[0]!r}; theirs are {theirs}")
    def name_of(cls, instance):  # a wrapper's: Lookahead(Adam)
        inner = getattr(instance, "inner_optimizer", None)
        return cls.__name__ if inner is None else f"{cls.__name__}({name_of(type(inner), inner)})"

    names = [name_of(cls, instance) for cls, instance in entries]
    built = {}
    for (cls, instance), name in zip(entries, names):
        # two classes of one name: their import paths (a wrapper's name, Lookahead(Adam), is kept; see below)
        label = name if names.count(name) == 1 or name != cls.__name__ else rule_path(cls)
        if label in built:
            label = f"{label} #{sum(k.split(' #')[0] == label for k in built) + 1}"
        if instance is None:
            instance = cls(**{k: v for k, v in hyperparameters.items() if k in declared[cls]})
        built[label] = instance
    return built


# ------------------------------------------------------------------ runs
def _stacked_loss(problems: Sequence, rows: int) -> Callable:
    """A loss for ``len(problems) * rows`` rows: rows ``[i * rows, (i + 1) * rows)`` see problem i."""
    import tensorflow as tf

    def loss(x):
        return tf.concat([p.loss(x[i * rows:(i + 1) * rows]) for i, p in enumerate(problems)], axis=0)

    return loss


def run_suite(optimizers: Sequence | dict = OPTIMIZERS, learning_rates: Sequence[float] = LEARNING_RATES,
              problems: Sequence | None = None, max_iters: int = MAX_ITERS, tol: float = TOL,
              on_call: Callable[[str], None] | None = None) -> list[Run]:
    """Run every optimizer at every learning rate on every problem from its default start.

    ``optimizers``: what ``make_optimizers`` takes, or its ``{label: optimizer}``.
    One ``convergence_test`` call per optimizer and problem dimension (see the
    module docstring). ``on_call(description)`` is called after each call (for
    a progress bar). Returns the runs, ordered by problem, optimizer, learning rate.
    """
    import tensorflow as tf

    from tfopt.lab import problems as problems_lib
    from tfopt.lab.harness import convergence_test

    problems = [problems_lib.get(p) for p in (problems or problems_lib.names())]
    rates = np.asarray(learning_rates, dtype=np.float64)
    k = len(rates)
    if not isinstance(optimizers, dict):
        optimizers = make_optimizers(optimizers)
    labels = list(optimizers)
    runs = []
    for name, optimizer in optimizers.items():
        for dim in sorted({p.dim for p in problems}):
            group = [p for p in problems if p.dim == dim]
            starts = np.repeat(np.asarray([p.default_init for p in group], dtype=np.float32), k, axis=0)
            loss = group[0] if len(group) == 1 else _stacked_loss(group, k)
            batch = convergence_test(optimizer, loss, init=starts, max_iters=max_iters,
                                     learning_rate=np.tile(rates, len(group)), record_path=True)
            start_losses = np.concatenate([np.asarray(p.loss(tf.constant(starts[i * k:(i + 1) * k])))
                                           for i, p in enumerate(group)])
            for i, problem in enumerate(group):
                for j, rate in enumerate(rates):
                    row = i * k + j
                    result = batch[row]
                    nearest, distance = _nearest(result.x_final, problem.minima)
                    result = dataclasses.replace(result, nearest_minimum=nearest, distance_to_minimum=distance)
                    iters, reached = iterations_to_tolerance(result.losses, problem.f_min, float(start_losses[row]),
                                                             max_iters, tol)
                    runs.append(Run(problem=problem.name, optimizer=name, learning_rate=float(rate),
                                    status=result.status, iterations=result.iterations, iters_to_tol=iters,
                                    reached_tol=reached, loss_gap=float(result.loss_final) - problem.f_min,
                                    distance=distance, wall_time=float(batch.wall_time),
                                    x_final=[float(v) for v in result.x_final], nearest_minimum=nearest.tolist(),
                                    result=result))
            if on_call is not None:
                on_call(f"{name}, {len(group)} problem{'s' * (len(group) > 1)} of dim {dim}")
    order = {p.name: i for i, p in enumerate(problems)}
    runs.sort(key=lambda r: (order[r.problem], labels.index(r.optimizer), r.learning_rate))
    return runs


def run_basins(problem: str = BASIN["problem"], optimizer: str = BASIN["optimizer"],
               learning_rate: float = BASIN["learning_rate"], grid: int = BASIN["grid"], max_iters: int = MAX_ITERS):
    """Run ``optimizer`` from a ``grid`` x ``grid`` of starts over the problem's box: one batched call.

    Returns ``(batch, problem, counts)``; counts maps each category of
    ``tfopt.lab.plotting.basin_categories`` to its number of starts.
    """
    import tfopt
    from tfopt.lab import plotting
    from tfopt.lab import problems as problems_lib
    from tfopt.lab.harness import convergence_test

    problem = problems_lib.get(problem)
    starts = plotting.basin_grid(problem, grid).astype(np.float32)
    batch = convergence_test(tfopt.RULES[optimizer](learning_rate), problem, init=starts, max_iters=max_iters,
                             record_path=False)
    category, names = plotting.basin_categories(batch, problem)
    counts = dict(zip(names, np.bincount(category, minlength=len(names)).tolist()))
    return batch, problem, counts


# ---------------------------------------------------------------- tables
def _gap_text(v: float) -> str:
    return f"{v:.2e}" if math.isfinite(v) else ("inf" if v > 0 else "nan" if math.isnan(v) else "-inf")


def _tol_text(run: Run) -> str:
    return str(run.iters_to_tol) if run.reached_tol else f"{run.iters_to_tol}*"


FULL_HEADER = ("problem", "optimizer", "lr", "status", "iters", f"iters to {TOL:g}", "loss - f_min",
               "dist. to min", "time (s)")


def full_rows(runs: Sequence[Run]) -> list[tuple]:
    return [(r.problem, r.optimizer, f"{r.learning_rate:g}", r.status, str(r.iterations), _tol_text(r),
             _gap_text(r.loss_gap), _gap_text(r.distance), f"{r.wall_time:.2f}") for r in runs]


def glance(runs: Sequence[Run]) -> tuple[tuple, list[tuple]]:
    """The at-a-glance matrix: one row per optimizer and learning rate, one column per problem.

    A cell is the iterations to the tolerance, or why it was not reached:
    ``exploded``, ``> N`` (still going after the budget), ``elsewhere``
    (stopped at another stationary point). ``solved`` counts the problems
    reached; ``mean iters`` averages iterations to the tolerance, counting the
    budget for the unsolved (lower is better).
    """
    problems = list(dict.fromkeys(r.problem for r in runs))
    configs = list(dict.fromkeys((r.optimizer, r.learning_rate) for r in runs))
    by_key = {(r.optimizer, r.learning_rate, r.problem): r for r in runs}
    rows = []
    for optimizer, rate in configs:
        cells, solved, total = [], 0, []
        for problem in problems:
            r = by_key.get((optimizer, rate, problem))
            if r is None:
                cells.append("")
                continue
            total.append(r.iters_to_tol)
            solved += r.reached_tol
            if r.reached_tol:
                cells.append(str(r.iters_to_tol))
            elif r.status == "exploded":
                cells.append("exploded")
            elif r.status == "max_iters":
                cells.append(f"> {r.iterations}")
            else:
                cells.append("elsewhere")
        rows.append((f"{optimizer} lr={rate:g}", *cells, f"{solved}/{len(total)}", f"{np.mean(total):.0f}"))
    return ("optimizer", *problems, "solved", "mean iters"), rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], groups: int | None = None) -> str:
    """An aligned plain-text table; with ``groups``, a blank line whenever column ``groups`` changes."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    right = [i > 0 and all(_right_aligned(row[i]) for row in rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        if groups is not None and i and row[groups] != rows[i - 1][groups]:
            out.append("")
        out.append(line(row))
    return "\n".join(out)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    right = [i > 0 and all(_right_aligned(row[i]) for row in rows) for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _right_aligned(text: str) -> bool:
    """Numbers (and the words that stand in a number column) are right-aligned."""
    text = str(text).rstrip("*").replace("> ", "").split("/")[0]
    try:
        float(text)
    except ValueError:
        return text in ("", "inf", "nan", "-inf", "exploded", "elsewhere")
    return True


# --------------------------------------------------------------- figures
def _figure(figsize):
    """A pyplot-free figure without a layout engine: the report's figures place their axes themselves,
    which saves a layout pass (about a second per figure on a small machine)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _row_of_panels(fig, n: int, *, left=0.75, right=1.35, bottom=0.65, top=0.5, gap=0.55, bar=0.18):
    """n equal axes in a row and a colour-bar axes after them; margins in inches."""
    width, height = fig.get_size_inches()
    panel = (width - left - right - gap * (n - 1)) / n
    axes = [fig.add_axes([(left + i * (panel + gap)) / width, bottom / height, panel / width,
                          (height - bottom - top) / height]) for i in range(n)]
    cax = fig.add_axes([(left + n * panel + (n - 1) * gap + 0.12) / width, bottom / height, bar / width,
                        (height - bottom - top) / height])
    return axes, cax


def _by_problem(runs: Sequence[Run], problem: str, optimizer: str | None = None) -> dict:
    return {r.label: r.result for r in runs if r.problem == problem and optimizer in (None, r.optimizer)}


def figure_paths(runs: Sequence[Run], problem, optimizers: Sequence[str]):
    """One panel per optimizer: its learning rates' paths on ``problem`` (1-D or 2-D)."""
    from tfopt.lab import plotting

    fig = _figure((5.0 * len(optimizers) + 3.1, 7.3))
    axes, cax = _row_of_panels(fig, len(optimizers), left=1.3, right=1.6, bottom=2.4, top=0.85, gap=1.0)
    fig.suptitle(f"{problem.name}: {'parameter paths' if problem.dim == 1 else 'trajectories'}", y=0.985)
    for i, (ax, optimizer) in enumerate(zip(axes, optimizers)):
        results = _by_problem(runs, problem.name, optimizer)
        draw = plotting.plot_paths_1d if problem.dim == 1 else plotting.plot_paths_2d
        draw(results, problem, ax=ax, colorbar=cax if i == len(optimizers) - 1 else False,
             legend={"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "framealpha": 1.0, "fontsize": 13})
        ax.set_title(optimizer)
        if i:
            ax.set_ylabel("")
    return fig


def figure_loss_curves(runs: Sequence[Run], problems: Sequence, optimizers: Sequence[str],
                       learning_rates: Sequence[float]):
    """One panel per problem, every run in it: colour = optimizer, line style = learning rate."""
    from matplotlib.lines import Line2D

    from tfopt.lab import plotting

    cols = min(3, len(problems))
    nrows = math.ceil(len(problems) / cols)
    width, height = 5.4 * cols + 0.4, 3.8 * nrows + 1.6
    fig = _figure((width, height))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    fig.subplots_adjust(left=1.25 / width, right=1 - 0.25 / width, top=1 - 0.5 / height, bottom=2.1 / height,
                        hspace=0.6, wspace=0.42)
    colors = {o: f"C{i}" for i, o in enumerate(optimizers)}
    dashes = [":", "--", "-", "-."]  # dotted for the smallest learning rate, solid for the largest of three
    lines = {lr: dashes[i % len(dashes)] for i, lr in enumerate(sorted(learning_rates))}
    for ax, problem in zip(axes, problems):
        results = _by_problem(runs, problem.name)
        styles = {r.label: {"color": colors[r.optimizer], "ls": lines[r.learning_rate], "lw": 1.6}
                  for r in runs if r.problem == problem.name}
        plotting.plot_loss_curves(results, ax=ax, problem=problem, styles=styles, legend=False)
        ax.set_title(problem.name)
    for ax in axes[len(problems):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[o], lw=2.5, label=o) for o in optimizers]
    handles += [Line2D([], [], color="black", ls=lines[lr], lw=1.6, label=f"lr={lr:g}") for lr in learning_rates]
    handles += [Line2D([], [], ls="none", marker=m, color="0.5", mec="black", label=f"end: {s}")
                for s, m in plotting.END_MARKERS.items()]
    handles.append(Line2D([], [], color="0.4", ls=":", lw=1, label="≤ f_min (float precision)"))
    blank = Line2D([], [], ls="none", label=" ")
    handles += [blank] * (-len(handles) % 3)  # columns of three: optimizers, learning rates, ends, the floor
    fig.legend(handles=handles, loc="lower center", ncols=len(handles) // 3, fontsize="small", frameon=False)
    return fig


# ----------------------------------------------------------------- report
def write_tables(runs: Sequence[Run], out_dir: Path, settings: dict, basin: dict) -> list[Path]:
    """Write results.csv and results.json; return their paths."""
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for run in runs:  # non-finite numbers as inf / nan (JSON has null instead)
            writer.writerow([getattr(run, k) for k in CSV_COLUMNS])
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "runs": [r.row() for r in runs], "basins": basin}, f, indent=1,
                  allow_nan=False)
        f.write("\n")
    return [csv_path, json_path]


GUIDE = f"""\
**How to read it.** Each row is one optimizer at one learning rate; each column a test problem,
started from its customary hard start. A number is the *speed*: the first iteration after which
`loss − f_min ≤ {TOL:g}` (lower is better). Otherwise the cell says why it never got there:
`exploded` (NaN or Inf: the learning rate is too large for the gradients there), `> N` (still
moving when the budget ran out: too small a learning rate, a plateau or a narrow valley), or
`elsewhere` (stopped moving at another stationary point: a local minimum or a saddle). `solved`
counts the problems reached; `mean iters` averages the speed, counting the budget for the unsolved.
In the full table, `status` is how the run stopped (`converged` = an update left x unchanged),
`dist. to min` the distance from where it stopped to the nearest known global minimum, and `*`
marks a tolerance never reached (counted as the budget). The figures show the same runs: paths
over the loss landscape (hollow circle = start, star = known minimum, end marker: ● converged,
■ max_iters, ✖ exploded), loss curves on a log scale, and which minimum each start of a grid reaches.
"""


FIGURE_NOTES = {
    "paths": "Each line is one learning rate's run from the hollow circle to its end marker (● converged, "
             "■ max_iters, ✖ exploded); a line that ends on a star found a global minimum.",
    "loss_curves": "Loss above the minimum against iterations, log scale: lower and further left is faster; "
                   "a line that stops early exploded.",
    "animation": "The optimizers at one learning rate moving from the hollow circle, one frame per update at first "
                 "and log-spaced later (the title counts the updates); each ends on its end marker (● converged, "
                 "■ max_iters, ✖ exploded) and a star is a global minimum.",
    "basins": "Each pixel is one start of the grid, coloured by the minimum the run from there reached "
              "(black: exploded, grey: still moving when the budget ran out).",
}
"""One sentence under each analytic figure, by the start of its file name: how to read it."""


@dataclasses.dataclass
class Section:
    """A part of ``report.md``: a ``##`` heading, an ``intro`` paragraph, its figures (each ``(title, path,
    how_to_read)``: the image, then one sentence saying how to read it), then markdown ``text``.
    ``run_benchmark(extra_sections=...)`` places extra sections (e.g. learning-rate sensitivity, diagnostics)
    after the suites' figures and tables and before the full tables."""

    title: str
    figures: list = dataclasses.field(default_factory=list)
    text: str = ""
    intro: str = ""  # one paragraph before the figures

    def lines(self) -> list[str]:
        out = [f"## {self.title}", ""] + ([self.intro, ""] if self.intro else [])
        for title, path, note in self.figures:
            out += [f"### {title}", "", f"![{title}]({Path(path).name})", ""]
            if note:
                out += [note, ""]
        if self.text:
            out += [self.text.rstrip("\n"), ""]
        return out


def analytic_sections(runs, settings: dict, basin: dict, figures: Sequence[tuple[str, Path]]) -> tuple[list, list]:
    """The analytic suite's sections: ``(first, last)``: its summary and figures, then its table of all runs."""
    header, rows = glance(runs)
    intro = (f"{len(runs)} runs: {', '.join(settings['optimizers'])} × learning rates "
             f"{', '.join(f'{lr:g}' for lr in settings['learning_rates'])} × {len(settings['problems'])} problems, "
             f"from each problem's default start, at most {settings['max_iters']} iterations.")
    glance_text = "\n".join([intro, "", f"### At a glance: iterations to reach loss − f_min ≤ {TOL:g}", "",
                             markdown_table(header, rows), "", GUIDE])
    notes = [(title, path, FIGURE_NOTES.get(path.stem.split("_")[0] if not path.stem.startswith("loss")
                                            else "loss_curves", "")) for title, path in figures]
    basin_text = (f"Basin map: {basin['optimizer']} lr={basin['learning_rate']:g} from a {basin['grid']} × "
                  f"{basin['grid']} grid of starts on {basin['problem']} ({basin['wall_time']:.2f} s for all of them): "
                  + ", ".join(f"{k}: {v}" for k, v in basin["counts"].items()) + ".")
    first = [Section("Analytic suite: test functions", [], glance_text),
             Section("Analytic suite: figures", notes, basin_text)]
    all_runs = "\n".join([
        markdown_table(FULL_HEADER, full_rows(runs)), "",
        f"`*` the tolerance was never reached: counted as the budget ({settings['max_iters']}). "
        "`time (s)`: the batched call that ran the row (all problems of that dimension for that optimizer, "
        "tracing included). The same numbers are in `results.csv` and `results.json`."])
    return first, [Section("Analytic suite: all runs", [], all_runs)]


def write_markdown(out_dir: Path, settings: dict, first: Sequence[Section], extra: Sequence[Section] = (),
                   last: Sequence[Section] = ()) -> Path:
    """Write ``report.md``: a title and one line on the run, then the sections: ``first`` (the figures and tables a
    reader looks at first), ``extra``, ``last`` (the full tables)."""
    suites = {"analytic": "analytic suite", "train": "training suite", "all": "analytic and training suites"}
    lines = [
        "# tfopt benchmark" if settings["suite"] != "analytic" else "# tfopt convergence benchmark",
        "",
        f"The {suites[settings['suite']]}{' (quick)' if settings['quick'] else ''}: {settings['date']}, "
        f"tfopt {settings['tfopt']}, TensorFlow {settings['tensorflow']}, {settings['total_time']:.1f} s in all.",
        "",
    ]
    for section in [*first, *extra, *last]:
        lines += section.lines()
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _versions() -> dict:
    import tensorflow as tf

    import tfopt

    return {"tfopt": tfopt.__version__, "tensorflow": tf.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


SUITES = ("analytic", "train", "all")


def run_benchmark(out_dir: str | os.PathLike = "tfopt-report", quick: bool = False, progress: bool = True,
                  echo: Callable[[str], None] | None = print, *, optimizers: Sequence = OPTIMIZERS,
                  learning_rates: Sequence[float] | None = None, hyperparameters: dict | None = None,
                  suite: str = "analytic", workers: int | None = None, ray: str | None = None,
                  workloads: Sequence[str] | None = None, extra_sections: Sequence[Section] = ()) -> Report:
    """Run the benchmark's suite(s) and write the report to ``out_dir``.

    ``suite``: ``"analytic"`` (the test functions, below), ``"train"`` (``tfopt.lab.train``: real training
    workloads, time to target, performance profile) or ``"all"`` (both, one report). The analytic suite
    writes ``results.csv``, ``results.json`` and its PNGs; the training suite ``train_results.csv``,
    ``train_results.json``, ``performance_profile.png`` and ``train_curves.png``; both write ``report.md``
    (figures first) and print their tables with ``echo`` (None: silent). ``quick``: himmelblau and
    rosenbrock only and a 30 x 30 basin map (a few seconds); for training, one seed, three learning rates
    and shorter budgets. ``optimizers`` and ``hyperparameters``: see ``make_optimizers`` (your rules sit
    beside the built-ins, labelled by class name); ``learning_rates``: the rates each runs at (default:
    ``LEARNING_RATES``, and the training suite's own). ``workers``/``ray``: where the training trials run
    (``tfopt.lab.parallel``; default: one worker process per CPU). ``workloads``: a subset of
    ``tfopt.lab.workloads.names()``. ``extra_sections``: more ``Section``s for report.md, after the figures.
    """
    from tqdm.auto import tqdm

    from tfopt.integrations.keras_optimizer import rule_path

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    built = make_optimizers(optimizers, hyperparameters)
    labels = list(built)
    if learning_rates is not None:
        learning_rates = [float(lr) for lr in learning_rates]
        if not learning_rates or not all(math.isfinite(lr) and lr > 0 for lr in learning_rates):
            raise ValueError(f"learning_rates must be positive numbers, got {learning_rates}")
    if workloads is not None:
        from tfopt.lab import workloads as workloads_lib

        workloads = [workloads_lib.get(w).name for w in workloads]

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"suite": suite, "optimizers": labels,
                "rules": {label: rule_path(type(o)) for label, o in built.items()},
                "hyperparameters": dict(hyperparameters or {}), "quick": quick,
                "date": datetime.datetime.now().isoformat(timespec="seconds"), **_versions()}
    timings: dict = {}
    first, last, files = [], [], []
    report = Report(runs=[], basin={}, settings=settings, out_dir=out_dir, files=files, total_time=0.0)
    bar = tqdm(total=0, desc="tfopt bench", unit="step", disable=None if progress else True, leave=False)
    try:
        if suite in ("train", "all"):
            train_part = _train_suite(built, learning_rates, workloads, quick, workers, ray, out_dir, bar, timings)
            report.trials, report.summaries, train_settings, train_first, train_last, train_files = train_part
            settings["train"] = train_settings
            first += train_first
            last += train_last
            files += train_files
        if suite in ("analytic", "all"):
            runs, basin, analytic_settings, figures, sens_section = _analytic_suite(
                built, learning_rates or LEARNING_RATES, quick, out_dir, bar, timings)
            settings.update(analytic_settings)
            report.runs, report.basin = runs, basin
            analytic_first, analytic_last = analytic_sections(runs, settings, basin, figures)
            analytic_first.insert(1, sens_section)  # after the glance table, before the other figures
            first = analytic_first + first if suite == "analytic" else first + analytic_first
            last = last + analytic_last
            files += [p for _, p in figures] + [p for _, p, _ in sens_section.figures]
        settings["total_time"] = time.perf_counter() - started
        settings["timings"] = timings
        if report.runs:
            files[:0] = write_tables(report.runs, out_dir, settings, _json_safe(report.basin))
        if report.trials:
            from tfopt.lab import train

            files[:0] = train.write_tables(report.trials, report.summaries, out_dir, settings)
        files.insert(0, write_markdown(out_dir, settings, first, extra_sections, last))
    finally:
        bar.close()
    report.total_time = time.perf_counter() - started
    if echo is not None:
        _echo(report, echo, timings)
    return report


def _echo(report: Report, echo: Callable[[str], None], timings: dict) -> None:
    runs, basin = report.runs, report.basin
    if report.trials:
        from tfopt.lab import train

        echo(text_table(train.SUMMARY_HEADER, train.summary_rows(report.summaries), groups=0))
        echo("\nTraining suite at a glance: median steps to the validation target at the best learning rate\n")
        echo(text_table(*train.glance(report.summaries)))
        echo("")
        echo(text_table(*train.score_table(report.summaries)))
        for s in report.summaries:
            for error in s.errors:
                echo(f"{s.workload}, {s.optimizer}: {error}")
        echo(f"\n{len(report.trials)} training trials in {timings.get('train suite', 0.0):.1f} s.\n")
    if runs:
        echo(text_table(FULL_HEADER, full_rows(runs), groups=0))
        echo(f"\n* tolerance (loss - f_min <= {TOL:g}) never reached: counted as the budget.\n")
        header, rows = glance(runs)
        echo(f"At a glance: iterations to reach loss - f_min <= {TOL:g}\n")
        echo(text_table(header, rows))
        statuses = {s: sum(r.status == s for r in runs) for s in ("converged", "max_iters", "exploded")}
        echo(f"\n{len(runs)} runs ({', '.join(f'{v} {k}' for k, v in statuses.items())}) and a "
             f"{basin['grid']}x{basin['grid']} basin map in {report.total_time:.1f} s "
             f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}).")


def _lap(timings: dict, name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - since
    return now


def _analytic_suite(built: dict, learning_rates: list, quick: bool, out_dir: Path, bar, timings: dict):
    """Run the analytic suite and draw its figures; ``(runs, basin, settings, [(title, path)], sensitivity
    section)``."""
    from tfopt.lab import problems as problems_lib

    labels = list(built)
    problems = [problems_lib.get(p) for p in (QUICK_PROBLEMS if quick else problems_lib.names())]
    dims = {p.dim for p in problems}
    paths_figures = [p for p in problems if p.dim in (1, 2)]
    basin = dict(BASIN, grid=QUICK_BASIN_GRID if quick else BASIN["grid"])
    animated = any(p.name == ANIMATED for p in problems)
    bar.total += 2 * len(built) * len(dims) + 1 + len(paths_figures) + 3 + animated
    bar.refresh()

    def advance(what: str):
        bar.set_postfix_str(what, refresh=False)
        bar.update()

    clock = time.perf_counter()
    runs = run_suite(built, learning_rates, [p.name for p in problems], MAX_ITERS, on_call=advance)
    clock = _lap(timings, "suite", clock)
    from tfopt.lab import sensitivity

    grid = sensitivity.log_grid(points=QUICK_SENSITIVITY_POINTS) if quick else None
    sens = sensitivity.learning_rate_sensitivity(built, [p.name for p in problems], grid, max_iters=MAX_ITERS,
                                                 on_call=advance)
    clock = _lap(timings, "sensitivity", clock)
    batch, basin_problem, counts = run_basins(basin["problem"], basin["optimizer"], basin["learning_rate"],
                                              basin["grid"])
    basin.update(counts=counts, wall_time=batch.wall_time)
    advance("basin map")
    clock = _lap(timings, "basin map", clock)

    import matplotlib

    from tfopt.lab import plotting

    figures = []  # (title, path)

    def save(fig, title: str, name: str):
        plotting.save_figure(fig, out_dir / name)
        figures.append((title, out_dir / name))
        advance(name)

    sens_section = sensitivity.report_section(sens, out_dir, style=STYLE)
    advance("sensitivity.png")
    if animated:
        from tfopt.lab.animation import animate_paths

        rate = learning_rates[len(learning_rates) // 2]
        moving = {r.label: r.result for r in runs if r.problem == ANIMATED and r.learning_rate == rate}
        path = animate_paths(moving, problems_lib.get(ANIMATED), out_dir / f"animation_{ANIMATED}.gif")
        figures.append((f"Animation on {ANIMATED} (lr={rate:g})", path))
        advance(path.name)
    with matplotlib.rc_context(STYLE):
        for problem in paths_figures:
            save(figure_paths(runs, problem, labels), f"Paths on {problem.name}", f"paths_{problem.name}.png")
        save(figure_loss_curves(runs, problems, labels, learning_rates), "Loss curves", "loss_curves.png")
        title = (f"{basin['optimizer']} lr={basin['learning_rate']:g} on {basin_problem.name}\n"
                 f"from {len(batch):,} starts")
        save(plotting.plot_basins(batch, basin_problem, title=title),
             f"Basins of attraction on {basin_problem.name}", f"basins_{basin_problem.name}.png")
    _lap(timings, "figures", clock)
    settings = {"learning_rates": learning_rates, "problems": [p.name for p in problems], "max_iters": MAX_ITERS,
                "tol": TOL, "tol_rule": f"first iteration after which loss - f_min <= {TOL:g}; budget if never"}
    settings["sensitivity"] = sens.summary()
    return runs, basin, settings, figures, sens_section


def _train_suite(built: dict, learning_rates, workloads, quick: bool, workers, ray, out_dir: Path, bar,
                 timings: dict):
    """Run the training suite and draw its figures: ``(results, summaries, settings, first sections, last
    sections, files)``."""
    from tfopt.lab import train

    rates = list(learning_rates or (train.QUICK_LEARNING_RATES if quick else train.LEARNING_RATES))
    seeds = train.QUICK_SEEDS if quick else train.SEEDS
    count = len(built) * len(rates) * seeds * len(workloads or train.workloads_lib.names())
    bar.total += count + 3
    bar.refresh()

    def advance(result):
        bar.set_postfix_str(f"{result.workload} {result.optimizer} lr={result.learning_rate:g}", refresh=False)
        bar.update()

    clock = time.perf_counter()
    results, summaries = train.run_train_suite(built, rates, workloads, seeds, quick, workers, ray, on_result=advance)
    clock = _lap(timings, "train suite", clock)
    first, last, files = train.report_sections(results, summaries, out_dir, STYLE, advance=lambda: bar.update())
    diagnosed, diagnostics_files = train.diagnostics_section(built, summaries, out_dir, STYLE)
    if diagnosed is not None:
        first.append(diagnosed)
        files += diagnostics_files
    bar.update()
    _lap(timings, "train figures", clock)
    where = f"Ray ({ray})" if ray is not None else (f"{workers} worker processes" if workers not in (None, 1)
                                                    else "this process" if workers == 1 else "worker processes")
    settings = {"learning_rates": rates, "seeds": seeds, "workloads": list(dict.fromkeys(r.workload for r in results)),
                "where": where, "workers": workers, "ray": ray, "tau_max": train.TAU_MAX,
                "targets": {w: train.workloads_lib.get(w).target_text for w in dict.fromkeys(r.workload
                                                                                           for r in results)}}
    return results, summaries, settings, first, last, files


def _json_safe(d: dict) -> dict:
    return {k: _json_number(v) if not isinstance(v, dict) else v for k, v in d.items()}
