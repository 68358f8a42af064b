"""Learning-rate sensitivity: iterations to tolerance against the learning rate, on a fine log grid.

For each optimizer and test problem, every learning rate of a grid (by default
64 rates, log-spaced from 1e-4 to 1) runs from the problem's default start as
one row of a batched ``convergence_test`` call: the whole grid of a problem is
one compiled loop, not 64. Problems of the same dimension share that call (a
loss applying each problem to its own rows, as ``tfopt bench`` does), so an
optimizer costs one call per problem dimension; rows are independent, so each
is bit for bit the run a call of its own would make. A rule that is not
elementwise (Lamb, Adafactor, Muon, ...) runs each row as a loop of its own
(see ``tfopt.lab.harness``): the same curves, slower (about 0.1-0.5 s per row).

Per learning rate ``lr`` the measure is the benchmark's speed,
``iterations_to_tolerance``: the first iteration after which
``loss - f_min <= tol`` (``bench.TOL``, 1e-3), or the budget ``max_iters`` if
never. A learning rate is *stable* when its run reaches the tolerance; a
*stable range* is a maximal run of consecutive grid rates that all do, and
``SensitivityCurve.stable_range`` is the widest of them, with its width in
decades, ``log10(hi / lo)``: how far the learning rate may be off and still work.

``learning_rate_sensitivity`` computes the curves (plain data);
``plot_sensitivity`` draws one problem's curves (log x, log y, the stable
ranges shaded), ``plot_sensitivity_grid`` one panel per problem. Plots follow
``tfopt.lab.plotting``: matplotlib imported only when called, no pyplot, no
global style change, ``ax=None`` makes a new figure, the Figure is returned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tfopt.lab import bench

__all__ = ["SensitivityCurve", "Sensitivity", "learning_rate_sensitivity", "log_grid", "plot_sensitivity",
           "plot_sensitivity_grid", "report_section", "summary_table", "SUMMARY_COLUMNS", "HOW_TO_READ"]

LOW, HIGH, POINTS = 1e-4, 1.0, 64
"""The default grid: ``POINTS`` learning rates log-spaced from ``LOW`` to ``HIGH``."""

SUMMARY_COLUMNS = ("problem", "optimizer", "stable_low", "stable_high", "stable_decades", "best_learning_rate",
                   "best_iters", "stable_points", "points")


def log_grid(low: float = LOW, high: float = HIGH, points: int = POINTS) -> np.ndarray:
    """``points`` learning rates log-spaced from ``low`` to ``high`` (both included), float64."""
    if not (isinstance(points, int) and points >= 2):
        raise ValueError(f"points must be an integer >= 2, got {points!r}.")
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"the grid needs 0 < low < high < inf, got low={low!r}, high={high!r}.")
    return np.geomspace(low, high, points)


@dataclasses.dataclass(frozen=True)
class SensitivityCurve:
    """One optimizer on one problem over a grid of learning rates (one row of the batched call each).

    Attributes:
      problem, optimizer: the names.
      learning_rates: ``[k]``, increasing.
      iterations: ``[k]`` iterations to tolerance; ``max_iters`` where not reached.
      reached: ``[k]`` whether ``loss - f_min <= tol`` was reached (the rate is *stable*).
      status: ``[k]`` how each run stopped (``converged``, ``exploded``, ``max_iters``).
      max_iters, tol: the budget and the tolerance.
      wall_time: seconds of the call that ran the grid (shared with the problems batched with it).
    """

    problem: str
    optimizer: str
    learning_rates: np.ndarray
    iterations: np.ndarray
    reached: np.ndarray
    status: np.ndarray
    max_iters: int
    tol: float
    wall_time: float

    @property
    def stable_ranges(self) -> list[tuple[float, float]]:
        """Every maximal run of consecutive grid rates that reach the tolerance, as ``(lo, hi)``, increasing."""
        reached = np.concatenate([[False], np.asarray(self.reached, dtype=bool), [False]])
        edges = np.flatnonzero(np.diff(reached.astype(np.int8)))
        lr = self.learning_rates
        return [(float(lr[a]), float(lr[b - 1])) for a, b in zip(edges[::2], edges[1::2])]

    @property
    def stable_range(self) -> tuple[float, float] | None:
        """The widest stable range ``(lo, hi)`` (the lower one on a tie); None if no rate reaches the tolerance."""
        ranges = self.stable_ranges
        return max(ranges, key=lambda r: (r[1] / r[0], -r[0])) if ranges else None

    @property
    def stable_decades(self) -> float:
        """``log10(hi / lo)`` of ``stable_range``: 0 for a single rate, NaN for none."""
        found = self.stable_range
        return math.log10(found[1] / found[0]) if found else math.nan

    @property
    def best(self) -> tuple[float, int] | None:
        """``(learning_rate, iterations)`` of the fastest stable rate (the smallest on a tie); None if none."""
        if not np.any(self.reached):
            return None
        iterations = np.where(self.reached, self.iterations, np.iinfo(np.int64).max)
        k = int(np.argmin(iterations))
        return float(self.learning_rates[k]), int(self.iterations[k])

    def summary(self) -> dict:
        """One row of ``SUMMARY_COLUMNS`` (None where no rate is stable)."""
        found, best = self.stable_range, self.best
        return {"problem": self.problem, "optimizer": self.optimizer,
                "stable_low": found[0] if found else None, "stable_high": found[1] if found else None,
                "stable_decades": self.stable_decades if found else None,
                "best_learning_rate": best[0] if best else None, "best_iters": best[1] if best else None,
                "stable_points": int(np.sum(self.reached)), "points": len(self.learning_rates)}


@dataclasses.dataclass
class Sensitivity:
    """What ``learning_rate_sensitivity`` returns: the curves, in problem then optimizer order.

    ``calls`` is the number of ``convergence_test`` calls made (one per optimizer and problem dimension).
    """

    curves: list[SensitivityCurve]
    problems: list[str]
    optimizers: list[str]
    calls: int
    wall_time: float

    def curve(self, problem: str, optimizer: str) -> SensitivityCurve:
        for c in self.curves:
            if c.problem == problem and c.optimizer == optimizer:
                return c
        raise KeyError(f"no curve for problem {problem!r} and optimizer {optimizer!r}; problems: {self.problems}, "
                       f"optimizers: {self.optimizers}.")

    def for_problem(self, problem: str) -> list[SensitivityCurve]:
        """The curves of one problem, in optimizer order."""
        if problem not in self.problems:
            raise KeyError(f"no curves for problem {problem!r}; the problems are {self.problems}.")
        return [c for c in self.curves if c.problem == problem]

    def summary(self) -> list[dict]:
        """One row of ``SUMMARY_COLUMNS`` per curve (for a table, CSV or JSON)."""
        return [c.summary() for c in self.curves]


def learning_rate_sensitivity(optimizers: Sequence | dict = bench.OPTIMIZERS, problems: Sequence | None = None,
                              learning_rates: Sequence[float] | None = None, *, max_iters: int = bench.MAX_ITERS,
                              tol: float = bench.TOL,
                              on_call: Callable[[str], None] | None = None) -> Sensitivity:
    """Iterations to tolerance of every optimizer at every learning rate of a fine grid, on every problem.

    Args:
      optimizers: what ``bench.make_optimizers`` takes (names, import paths, classes, instances)
        or its ``{label: optimizer}``; the learning rate of each is overridden by the grid.
      problems: problem names or ``Problem``s; default: every ``tfopt.problems`` problem.
      learning_rates: the grid (positive, sorted here); default ``log_grid()``: 64 rates, 1e-4 .. 1.
      max_iters: the budget of each run; a rate that does not reach ``tol`` counts as ``max_iters``.
      tol: the tolerance on ``loss - f_min``.
      on_call: called with a description after each ``convergence_test`` call (a progress bar).

    Returns:
      A ``Sensitivity``. Each optimizer costs one ``convergence_test`` call per problem dimension:
      the whole grid of every problem of that dimension runs as the rows of that call.

    Raises:
      ValueError: before anything runs, on an empty grid, a rate that is not positive and finite,
        an unknown problem or optimizer.
    """
    import time

    import tensorflow as tf

    from tfopt.lab import harness
    from tfopt.lab import problems as problems_lib

    rates = _grid(learning_rates)
    problems = [problems_lib.get(p) for p in (problems or problems_lib.names())]
    if not problems:
        raise ValueError("problems is empty: give at least one problem.")
    if not isinstance(optimizers, dict):
        optimizers = bench.make_optimizers(optimizers)
    k = len(rates)
    curves, calls, started = [], 0, time.perf_counter()
    for name, optimizer in optimizers.items():
        for dim in sorted({p.dim for p in problems}):
            group = [p for p in problems if p.dim == dim]
            starts = np.repeat(np.asarray([p.default_init for p in group], dtype=np.float32), k, axis=0)
            loss = group[0] if len(group) == 1 else _stacked_loss(group, k)
            batch = harness.convergence_test(optimizer, loss, init=starts, max_iters=max_iters,
                                             learning_rate=np.tile(rates, len(group)), record_path=True)
            calls += 1
            for i, problem in enumerate(group):
                start_loss = float(np.asarray(problem.loss(tf.constant(starts[i * k:i * k + 1])))[0])
                curves.append(_curve(batch, range(i * k, (i + 1) * k), problem, name, rates, start_loss,
                                     max_iters, tol))
            if on_call is not None:
                on_call(f"sensitivity: {name}, {len(group)} problem{'s' * (len(group) > 1)} of dim {dim}")
    order = {p.name: i for i, p in enumerate(problems)}
    labels = list(optimizers)
    curves.sort(key=lambda c: (order[c.problem], labels.index(c.optimizer)))
    return Sensitivity(curves=curves, problems=[p.name for p in problems], optimizers=labels, calls=calls,
                       wall_time=time.perf_counter() - started)


def _grid(learning_rates) -> np.ndarray:
    if learning_rates is None:
        return log_grid()
    rates = np.asarray(learning_rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0:
        raise ValueError(f"learning_rates must be a non-empty list of numbers, got shape {list(rates.shape)}.")
    bad = rates[~(np.isfinite(rates) & (rates > 0))]
    if bad.size:
        raise ValueError(f"learning_rates must be positive and finite; {bad[0]!r} is not.")
    return np.unique(rates)


def _stacked_loss(problems: Sequence, rows: int) -> Callable:
    """A loss for ``len(problems) * rows`` rows: rows ``[i * rows, (i + 1) * rows)`` see problem i."""
    import tensorflow as tf

    def loss(x):
        return tf.concat([p.loss(x[i * rows:(i + 1) * rows]) for i, p in enumerate(problems)], axis=0)

    return loss


def _curve(batch, rows, problem, optimizer, rates, start_loss, max_iters, tol) -> SensitivityCurve:
    measured = [bench.iterations_to_tolerance(batch[r].losses, problem.f_min, start_loss, max_iters, tol)
                for r in rows]
    return SensitivityCurve(
        problem=problem.name, optimizer=optimizer, learning_rates=rates.copy(),
        iterations=np.array([m[0] for m in measured], dtype=np.int64),
        reached=np.array([m[1] for m in measured], dtype=bool),
        status=np.array([batch.status[r] for r in rows]), max_iters=int(max_iters), tol=float(tol),
        wall_time=float(batch.wall_time))


# ---------------------------------------------------------------- figures
def plot_sensitivity(curves: Sensitivity | Sequence[SensitivityCurve], problem: str | None = None, ax=None, *,
                     legend: bool | Mapping = True, title: str | None = None, save=None):
    """Draw iterations to tolerance against the learning rate (both log), one line per optimizer.

    A line joins the stable rates (those that reach the tolerance), each stable
    range shaded in the optimizer's colour. Along the bottom, one strip per
    optimizer tells every rate apart: a thick bar where it is stable, a thin
    line where it ran out of iterations (or stopped elsewhere: too small a
    rate, usually), a cross where it exploded (too large). The legend, right of
    the axes, gives each optimizer's widest stable range and its width in decades.

    Args:
      curves: a ``Sensitivity`` (then ``problem`` picks the problem; optional if there is one)
        or the ``SensitivityCurve``s of one problem.
      problem: the problem's name.
      ax: axes to draw on; a new figure if None.
      legend: draw the legend; a mapping is passed on to ``ax.legend``.
      title: the axes title (default: the problem's name).
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from matplotlib.transforms import blended_transform_factory

    from tfopt.lab import plotting

    curves = _curves_of(curves, problem)
    fig, ax = plotting._axes(ax, figsize=(9.6, 4.4))
    budget = max(c.max_iters for c in curves)
    strip = blended_transform_factory(ax.transData, ax.transAxes)
    rows = _strip_rows(len(curves))
    for curve, color, y in zip(curves, plotting._colors(len(curves)), rows):
        lr, ok = curve.learning_rates, curve.reached
        shown = np.where(ok, np.maximum(curve.iterations, 1), np.nan)  # 0 (start within tol) drawn at 1
        ax.plot(lr, shown, color=color, lw=2, marker="o", ms=3, label=_label(curve), zorder=3)
        ax.plot([lr[0], lr[-1]], [y, y], color=color, lw=1, transform=strip, zorder=3)
        for lo, hi in curve.stable_ranges:
            ax.axvspan(lo, hi, color=color, alpha=0.1, lw=0, zorder=1)
            ax.plot([lo, hi], [y, y], color=color, lw=5, solid_capstyle="round", transform=strip, zorder=4)
        exploded = ~ok & (curve.status == "exploded")
        ax.plot(lr[exploded], np.full(exploded.sum(), y), ls="none", marker="x", ms=4, mew=1.2, color=color,
                transform=strip, zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    top = budget * 1.5
    f = max(rows) + 0.06  # the strips sit below iteration 1, at the bottom of the axes
    bottom = 10 ** (-f * math.log10(top) / (1 - f))
    ax.set_ylim(bottom, top)
    ax.axhline(bottom * (top / bottom) ** (f - 0.025), color="0.6", lw=0.8)  # the strips' upper edge
    ax.axhline(budget, color="0.5", ls=":", lw=1, label=f"budget ({budget} it.)")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"iterations to loss − f_min ≤ {curves[0].tol:g}")
    ax.set_title(title or f"{curves[0].problem}: learning-rate sensitivity")
    ax.grid(True, which="major", alpha=0.3)
    ax.yaxis.set_major_locator(_decades(budget))
    ax.yaxis.set_minor_locator(_decades(0))
    handles, labels = ax.get_legend_handles_labels()
    plotting._legend(ax, legend, handles + _strip_handles(), labels + list(STRIP_LABELS), loc="upper left",
                     bbox_to_anchor=(1.01, 1.0))
    return plotting._finish(fig, save)


STRIP_LABELS = ("strip: reaches tol", "strip: short of tol", "strip: exploded")


def _strip_rows(n: int) -> list[float]:
    """Axes-fraction heights of the bottom strips, one per optimizer (the first at the top)."""
    return [0.03 + 0.035 * (n - 1 - i) for i in range(n)]


def _decades(budget: int):
    """Ticks at 1, 10, 100, ... up to ``budget`` (none under the strips)."""
    from matplotlib.ticker import FixedLocator

    return FixedLocator([10.0 ** e for e in range(int(math.log10(budget)) + 1)] if budget else [])


def _strip_handles() -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="0.4", lw=5), Line2D([], [], color="0.4", lw=1),
            Line2D([], [], ls="none", marker="x", ms=5, mew=1.2, color="0.4")]


def plot_sensitivity_grid(sensitivity: Sensitivity, problems: Sequence[str] | None = None, *, columns: int = 3,
                          save=None):
    """One ``plot_sensitivity`` panel per problem (default: all), ``columns`` to a row, one legend below.

    The shared legend names the optimizers; each optimizer's stable ranges are in
    ``sensitivity.summary()``. Returns the Figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from tfopt.lab import plotting

    problems = list(problems or sensitivity.problems)
    columns = max(1, min(columns, len(problems)))
    rows = math.ceil(len(problems) / columns)
    fig = Figure(figsize=(5.2 * columns, 4.0 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, (ax, problem) in enumerate(zip(axes, problems)):
        plot_sensitivity(sensitivity, problem, ax=ax, legend=False, title=problem)
        if i % columns:
            ax.set_ylabel("")
    for ax in axes[len(problems):]:
        ax.set_visible(False)
    colors = plotting._colors(len(sensitivity.optimizers))
    handles = [Line2D([], [], color=c, lw=2, marker="o", ms=3) for c in colors] + _strip_handles()
    ncols = {1: 2, 2: 3}.get(columns, len(handles))  # in rows that fit the figure's width
    fig.legend(handles, list(sensitivity.optimizers) + list(STRIP_LABELS), loc="outside lower center",
               ncols=ncols, fontsize="small", frameon=False)
    return plotting._finish(fig, save)


# ----------------------------------------------------------------- report
HOW_TO_READ = (
    "Each line is one optimizer: the iterations it needs to reach loss − f_min ≤ {tol:g} (log scale) at each of "
    "{points} learning rates (log scale); the shaded band, and the thick bar in the optimizer's strip at the "
    "bottom, are the rates that get there (a thin line: still short of it after {budget} iterations; a cross: "
    "exploded), so a wide band is an optimizer that forgives a badly chosen learning rate.")
"""The sentence under the sensitivity figure in the benchmark report."""

TABLE_HEADER = ("problem", "optimizer", "stable range", "decades", "best lr", "iters at best")


def summary_table(sensitivity: Sensitivity) -> tuple[tuple, list[tuple]]:
    """``(header, rows)`` of text cells: per problem and optimizer, the widest stable range and the fastest rate."""
    rows = []
    for curve in sensitivity.curves:
        found, best = curve.stable_range, curve.best
        rows.append((curve.problem, curve.optimizer, f"{found[0]:.2g} – {found[1]:.2g}" if found else "none",
                     f"{curve.stable_decades:.2f}" if found else "", f"{best[0]:.3g}" if best else "",
                     str(best[1]) if best else ""))
    return TABLE_HEADER, rows


def report_section(sensitivity: Sensitivity, out_dir, *, style: Mapping | None = None, name: str = "sensitivity.png",
                   title: str = "Learning-rate sensitivity"):
    """Draw ``plot_sensitivity_grid`` to ``out_dir / name`` and return the report's ``bench.Section`` for it.

    The section has the figure, the sentence saying how to read it (``HOW_TO_READ``) and the
    ``summary_table`` in markdown; ``style``: matplotlib rc settings for the figure (e.g. ``bench.STYLE``).
    """
    import contextlib
    from pathlib import Path

    import matplotlib

    from tfopt.lab import plotting

    path = Path(out_dir) / name
    with matplotlib.rc_context(style) if style else contextlib.nullcontext():
        plotting.save_figure(plot_sensitivity_grid(sensitivity), path)
    curve = sensitivity.curves[0]
    note = HOW_TO_READ.format(tol=curve.tol, points=len(curve.learning_rates), budget=curve.max_iters)
    intro = (f"{', '.join(sensitivity.optimizers)} at {len(curve.learning_rates)} learning rates from "
             f"{curve.learning_rates[0]:g} to {curve.learning_rates[-1]:g} (log-spaced) on each problem, from its "
             f"default start: {sensitivity.calls} batched calls, {sensitivity.wall_time:.1f} s.")
    return bench.Section(title, [("Iterations to tolerance against the learning rate", path, note)],
                         text=bench.markdown_table(*summary_table(sensitivity)), intro=intro)


def _curves_of(curves, problem) -> list[SensitivityCurve]:
    if isinstance(curves, Sensitivity):
        if problem is None:
            if len(curves.problems) != 1:
                raise ValueError(f"this Sensitivity has {len(curves.problems)} problems; name one with problem= "
                                 f"({', '.join(curves.problems)}).")
            problem = curves.problems[0]
        curves = curves.for_problem(problem)
    curves = list(curves)
    if not curves or not all(isinstance(c, SensitivityCurve) for c in curves):
        raise TypeError("curves must be a Sensitivity or a non-empty list of SensitivityCurve.")
    if len({c.problem for c in curves}) != 1:
        raise ValueError(f"the curves are of several problems ({sorted({c.problem for c in curves})}); "
                         "plot one problem per axes.")
    return curves


def _label(curve: SensitivityCurve) -> str:
    found = curve.stable_range
    if found is None:
        return f"{curve.optimizer}: never within tol"
    return f"{curve.optimizer}: stable {found[0]:.2g}–{found[1]:.2g} ({curve.stable_decades:.1f} dec.)"
