"""Figures of convergence runs: paths, loss curves and basin maps.

Every function takes the results of ``tfopt.convergence_test``, draws on ``ax``
(or on a new figure), and returns the matplotlib ``Figure``. ``results`` is a
mapping ``label -> ConvergenceResult``; the label is what the legend says, so
name the optimizer and its learning rate in it, e.g. ``"Adam lr=0.1"``.

* ``plot_paths_1d``: x against iterations over a heat map of log10(loss - f_min)
  (the figure of the TensorFlow guide "Optimizers with Core APIs", for any
  number of runs and with the whole colour range shown);
* ``plot_paths_2d``: trajectories over log-spaced contours of a 2-D problem,
  each start and end marked, every known minimum marked;
* ``plot_loss_curves``: loss - f_min against iterations, log scale;
* ``plot_basins``: which minimum each start of a grid reaches, with separate
  colours for exploded and unconverged starts.

matplotlib is imported only when a function is called, figures are made without
pyplot (no global state, no display needed: they work headless), and no global
style is changed. Each function takes ``save=`` to write the figure to a file.

End markers show how a run stopped: a filled circle ``converged``, a square
``max_iters``, a cross ``exploded`` (drawn where the run left the plotted box).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["plot_paths_1d", "plot_paths_2d", "plot_loss_curves", "plot_basins", "basin_grid", "basin_categories",
           "save_figure"]

END_MARKERS = {"converged": "o", "max_iters": "s", "exploded": "X"}
"""End marker of a run, by status."""

EXPLODED_COLOR = "#222222"
UNCONVERGED_COLOR = "#c8c8c8"
ELSEWHERE_COLOR = "#ffffff"

_GRID = 300  # points per axis of the loss heat maps and contour grids


# ------------------------------------------------------------------ helpers
def _colors(n: int) -> list:
    """n distinct line colours: tab10, then tab20, then evenly spaced on turbo."""
    from matplotlib import colormaps

    if n <= 9:  # tab10 without its grey, which hides on the grey heat maps
        return [colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)[:n]]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _axes(ax, figsize=(6.4, 4.8)):
    """(figure, axes): ax's, or a new pyplot-free figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100):
    """Write ``fig`` to ``path`` (format from the suffix, e.g. ``.png``); returns the figure."""
    fig.savefig(os.fspath(path), dpi=dpi)
    return fig


def _finish(fig, save):
    if save is not None:
        save_figure(fig, save)
    return fig


def _outline() -> list:
    """Path effects drawing a white outline under a line, so it stands out on any background."""
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=3.6, foreground="white", alpha=0.8), patheffects.Normal()]


def _check_results(results: Mapping[str, Any]) -> list:
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping label -> ConvergenceResult, got {type(results).__name__}.")
    items = list(results.items())
    for label, result in items:
        if getattr(result, "path", None) is None or getattr(result, "losses", None) is None:
            raise ValueError(f"result {label!r} has no recorded path; run convergence_test with record_path=True.")
    return items


def _check_dim(problem, dim: int, function: str):
    if getattr(problem, "dim", None) != dim:
        raise ValueError(f"{function} needs a problem of dim {dim}; {getattr(problem, 'name', problem)!r} "
                         f"has dim {getattr(problem, 'dim', None)}.")


def _gap(problem, points: np.ndarray) -> np.ndarray:
    """loss - f_min at ``points`` ([..., dim]), evaluated in float64."""
    values = np.asarray(problem.loss(np.asarray(points, dtype=np.float64)), dtype=np.float64)
    return values - problem.f_min


def _positive(values: np.ndarray) -> np.ndarray:
    """values with entries <= 0 (at f_min to float precision) raised to the smallest positive one."""
    values = np.array(values, dtype=np.float64)
    positive = values[np.isfinite(values) & (values > 0)]
    floor = positive.min() if positive.size else 1.0
    values[np.isfinite(values) & (values <= 0)] = floor
    return values


def _start(result, problem, init):
    """The run's start: result.init if it records one, else ``init``, else the problem's default start."""
    start = getattr(result, "init", None)
    if start is None:
        start = init if init is not None else getattr(problem, "default_init", None)
    if start is None:
        return None
    return np.asarray(start, dtype=np.float64).reshape(-1)


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    return a


def _end(points: np.ndarray, box) -> tuple[int, np.ndarray] | None:
    """(row, point): the last all-finite row of ``points`` [k, dim], clipped into ``box``.

    Clipping keeps an exploded run's cross visible, at the edge where it left the box.
    """
    finite = np.flatnonzero(np.all(np.isfinite(points), axis=-1))
    if finite.size == 0:
        return None
    row = int(finite[-1])
    lo, hi = np.asarray(box, dtype=np.float64).T
    return row, np.clip(points[row], lo, hi)


def _colorbar(fig, ax, mappable, where):
    """A log colour bar of loss - f_min: next to ``ax`` (``where`` True), in the Axes ``where``, or none."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    if where is False or where is None:
        return
    options = {"cax": where} if where is not True else {"ax": ax, "pad": 0.01}
    bar = fig.colorbar(mappable, ticks=LogLocator(numticks=8), format=LogFormatterSciNotation(), **options)
    bar.set_label("loss − f_min (log scale)")


def _legend(ax, legend, handles, labels, **defaults):
    """Draw the legend unless ``legend`` is false; a mapping overrides the default keyword arguments."""
    if not legend:
        return
    options = {"loc": "best", "fontsize": "small", "framealpha": 0.9, **defaults}
    if isinstance(legend, Mapping):
        options.update(legend)
    ax.legend(handles, labels, **options)


def _line_order(items) -> list[float]:
    """z-orders for the runs' lines: longer paths lower, so a long wandering run cannot bury the short ones."""
    lengths = np.array([len(r.path) for _, r in items])
    ranks = np.argsort(np.argsort(-lengths, kind="stable"), kind="stable")
    return [2.0 + 0.01 * k for k in ranks]


def _status_text(result) -> str:
    return f"{result.status}, {result.iterations} it."


# -------------------------------------------------------------- 1-D paths
def plot_paths_1d(results: Mapping[str, Any], problem, ax=None, *, init=None, colorbar=True,
                  legend: bool | Mapping = True, save=None):
    """Plot x against iterations over a heat map of log10(loss - f_min), one line per run.

    The TensorFlow guide's figure, for any number of runs: each run is a line
    from its start (iteration 0) to its end marker, coloured from a colormap
    cycle; the heat map's colour scale spans the whole range of the loss on the
    problem's domain (a colour bar shows it).

    Args:
      results: mapping label -> ``ConvergenceResult`` of a 1-D problem (with its path).
      problem: the ``tfopt.problems.Problem`` the runs minimised (dim 1).
      ax: axes to draw on; a new figure if None.
      init: the runs' start if not ``problem.default_init`` (results do not record it).
      colorbar: draw the loss colour bar: True (next to ``ax``), False, or the Axes to draw it in.
      legend: draw the legend; a mapping is passed on to ``ax.legend`` (``loc``, ...).
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    _check_dim(problem, 1, "plot_paths_1d")
    items = _check_results(results)
    fig, ax = _axes(ax)
    (lo, hi), = problem.domain
    longest = max([len(r.path) for _, r in items] + [1])
    t_max = max(10, int(math.ceil(longest * 1.04)))

    xs = np.linspace(lo, hi, _GRID)
    gap = _positive(_gap(problem, xs[:, None]))
    mesh = ax.pcolormesh([0, t_max], xs, np.repeat(gap[:, None], 2, axis=1), shading="nearest",
                         cmap="Greys", norm=LogNorm(gap.min(), gap.max()), alpha=0.6, rasterized=True)
    _colorbar(fig, ax, mesh, colorbar)

    for (label, result), color, z in zip(items, _colors(len(items)), _line_order(items)):
        start = _start(result, problem, init)
        values = _finite(result.path[:, 0])
        t = np.arange(1, len(values) + 1)
        if start is not None:
            values, t = np.concatenate([start, values]), np.concatenate([[0], t])
        ax.plot(t, values, color=color, lw=2.2, path_effects=_outline(), zorder=z)
        end = _end(values[:, None], problem.domain)
        where, point = ([t[end[0]]], end[1]) if end is not None else ([0], [np.nan])
        ax.plot(where, point, ls="none", marker=END_MARKERS.get(result.status, "o"), ms=9, color=color,
                mec="black", mew=1, clip_on=False, zorder=6, label=f"{label} ({_status_text(result)})")
    minima = [m[0] for m in problem.minima]
    ax.plot(np.zeros(len(minima)), minima, ls="none", marker="*", ms=13, color="gold", mec="black", clip_on=False,
            zorder=7, label="known minimum" if len(minima) == 1 else "known minima")
    ax.set_xlim(0, t_max)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("iteration")
    ax.set_ylabel("x")
    ax.set_title(f"{problem.name}: parameter paths")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", lw=2))
    labels.append("line: x after each update")
    _legend(ax, legend, handles, labels)
    return _finish(fig, save)


# -------------------------------------------------------------- 2-D paths
def _contour(ax, problem, box, levels: int = 16):
    """Filled, log-spaced contours of loss - f_min over ``box``, with thin lines on the level edges."""
    from matplotlib.colors import LogNorm

    (x0, x1), (y0, y1) = box
    xs, ys = np.linspace(x0, x1, _GRID), np.linspace(y0, y1, _GRID)
    gap = _positive(_gap(problem, np.stack(np.meshgrid(xs, ys), axis=-1)))
    hi = np.log10(gap.max())
    lo = max(np.log10(gap.min()), hi - 12)  # float32 runs resolve no more than ~12 decades below the top
    bounds = np.logspace(lo, hi, levels)
    norm = LogNorm(bounds[0], bounds[-1])
    filled = ax.contourf(xs, ys, np.maximum(gap, bounds[0]), levels=bounds, norm=norm, cmap="viridis", alpha=0.55)
    ax.contour(xs, ys, gap, levels=bounds, colors="white", linewidths=0.5, alpha=0.7)
    return filled


def plot_paths_2d(results: Mapping[str, Any], problem, ax=None, *, init=None, colorbar=True,
                  legend: bool | Mapping = True, save=None):
    """Plot the trajectories of 2-D runs over log-spaced contour lines of the loss.

    Each run is a line from its start (hollow circle) through x after every
    update to its end marker (by status); every known minimum is a gold star.
    The axes show the problem's plotting box; an exploded run's cross sits
    where it left the box.

    Args:
      results: mapping label -> ``ConvergenceResult`` of a 2-D problem (with its path).
      problem: the ``tfopt.problems.Problem`` (dim 2).
      ax: axes to draw on; a new figure if None.
      init: the runs' start if not ``problem.default_init`` (results do not record it).
      colorbar: draw the loss colour bar: True (next to ``ax``), False, or the Axes to draw it in.
      legend: draw the legend; a mapping is passed on to ``ax.legend`` (``loc``, ...).
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from matplotlib.lines import Line2D

    _check_dim(problem, 2, "plot_paths_2d")
    items = _check_results(results)
    fig, ax = _axes(ax, figsize=(6.4, 5.6))
    box = problem.domain
    _colorbar(fig, ax, _contour(ax, problem, box), colorbar)

    for (label, result), color, z in zip(items, _colors(len(items)), _line_order(items)):
        path = _finite(result.path)
        start = _start(result, problem, init)
        if start is not None:
            path = np.concatenate([start[None], path])
        ax.plot(path[:, 0], path[:, 1], color=color, lw=2.2, path_effects=_outline(), zorder=z)
        if start is not None:
            ax.plot(*start, ls="none", marker="o", ms=9, mfc="white", mec=color, mew=2.2, zorder=5)
        end = _end(path, box)
        point = end[1] if end is not None else np.full(2, np.nan)
        ax.plot(*point, ls="none", clip_on=False, marker=END_MARKERS.get(result.status, "o"), ms=9, color=color,
                mec="black", mew=1, zorder=6, label=f"{label} ({_status_text(result)})")
    minima = np.asarray(problem.minima, dtype=np.float64)
    ax.plot(minima[:, 0], minima[:, 1], ls="none", marker="*", ms=15, color="gold", mec="black", zorder=7,
            label="known minimum" if len(minima) == 1 else "known minima")
    ax.set_xlim(*box[0])
    ax.set_ylim(*box[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{problem.name}: trajectories")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="o", ms=8, mfc="white", mec="black", mew=2))
    labels.append("start")
    _legend(ax, legend, handles, labels)
    return _finish(fig, save)


# ------------------------------------------------------------ loss curves
def plot_loss_curves(results: Mapping[str, Any], ax=None, *, problem=None, f_min: float | None = None,
                     styles: Mapping[str, Mapping] | None = None, legend: bool | Mapping = True, save=None):
    """Plot loss - f_min against iterations on a log scale, one curve per run.

    Values at or below ``f_min`` (reached to float precision) are drawn on the
    dotted floor line at the bottom instead of vanishing from the log axis. The
    axis stops at 1000 times the largest first value of the runs that did not
    explode; exploded runs leave through the top, their cross on the edge.

    Args:
      results: mapping label -> ``ConvergenceResult`` (with its losses).
      ax: axes to draw on; a new figure if None.
      problem: the problem the runs minimised; its ``f_min`` is subtracted.
      f_min: the value to subtract if there is no ``problem``; with neither the
        plain loss is drawn.
      styles: optional mapping label -> line keyword arguments (``color``,
        ``ls``, ...), e.g. one colour per optimizer and a line style per
        learning rate.
      legend: draw the legend; a mapping is passed on to ``ax.legend`` (``loc``, ...).
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    items = _check_results(results)
    fig, ax = _axes(ax)
    if f_min is None:
        f_min = problem.f_min if problem is not None else None
    reference = 0.0 if f_min is None else float(f_min)
    gaps = [np.asarray(r.losses, dtype=np.float64) - reference for _, r in items]
    every = np.concatenate(gaps + [np.zeros(0)])
    positive = every[np.isfinite(every) & (every > 0)]
    floor = positive.min() if positive.size else 1.0
    clipped = bool(np.any(np.isfinite(every) & (every <= 0)))
    # Exploded runs would stretch the axis to 1e30; cap it at 1000 x the largest start of the others.
    firsts = [g[0] for (_, r), g in zip(items, gaps) if r.status != "exploded" and len(g) and np.isfinite(g[0])]
    top = 1e3 * max(max(firsts), floor) if firsts else None

    for (label, result), gap, color in zip(items, gaps, _colors(len(items))):
        style = {"color": color, "lw": 1.8, **dict((styles or {}).get(label, {}))}
        y = _finite(gap)
        y[np.isfinite(y) & (y <= 0)] = floor
        t = np.arange(1, len(y) + 1)
        (line,) = ax.plot(t, y, label=f"{label} ({_status_text(result)})", **style)
        finite = np.flatnonzero(np.isfinite(y))
        if finite.size:
            k = finite[-1]
            end = y[k] if top is None else min(y[k], top)  # an exploded run's cross sits on the top edge
            ax.plot([t[k]], [end], ls="none", marker=END_MARKERS.get(result.status, "o"), ms=7,
                    color=line.get_color(), mec="black", mew=0.8, clip_on=False)
    if clipped:
        ax.axhline(floor, color="0.4", ls=":", lw=1, label="at f_min (to float precision)")
    ax.set_yscale("log")
    if top is not None:
        ax.set_ylim(top=top)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss" if f_min is None else "loss − f_min")
    name = getattr(problem, "name", None)
    ax.set_title(f"{name}: loss curves" if name else "loss curves")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, legend, *ax.get_legend_handles_labels())
    return _finish(fig, save)


# ------------------------------------------------------------- basin map
def basin_grid(problem, n: int = 100) -> np.ndarray:
    """An n x n grid of starts over a 2-D problem's box, shape ``[n * n, 2]``.

    Row-major with x varying fastest (``numpy.meshgrid`` order): the order
    ``plot_basins`` assumes when it is not given ``starts``.
    """
    _check_dim(problem, 2, "basin_grid")
    (x0, x1), (y0, y1) = problem.domain
    xx, yy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return np.stack([xx.ravel(), yy.ravel()], axis=-1)


def basin_categories(batch, problem, radius: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Category of each row of ``batch`` and the category names.

    Categories ``0 .. m-1``: converged within ``radius`` of known minimum k;
    then ``exploded``, ``max_iters`` (unconverged), and ``elsewhere``
    (converged, but not near a known minimum: a local minimum or a saddle).
    ``radius`` defaults to 2 % of the problem box's diagonal.
    """
    minima = np.asarray(problem.minima, dtype=np.float64)
    if radius is None:
        radius = 0.02 * float(np.linalg.norm([hi - lo for lo, hi in problem.domain]))
    x = np.asarray(batch.x_final, dtype=np.float64)
    status = np.asarray(batch.status)
    with np.errstate(invalid="ignore"):
        distances = np.linalg.norm(x[:, None, :] - minima[None], axis=-1)
        distances = np.where(np.isnan(distances), np.inf, distances)
    nearest = np.argmin(distances, axis=1)
    near = distances[np.arange(len(x)), nearest] <= radius
    m = len(minima)
    category = np.full(len(x), m + 2)  # elsewhere
    category[(status == "converged") & near] = nearest[(status == "converged") & near]
    category[status == "exploded"] = m
    category[status == "max_iters"] = m + 1
    names = [f"({', '.join(f'{v:.3g}' for v in point)})" for point in minima]
    return category, names + ["exploded", "unconverged (max_iters)", "converged elsewhere"]


def _as_grid(starts: np.ndarray):
    """(xs, ys, order) if the starts form a full grid, else None; order sorts rows y-major, x-minor."""
    xs, ys = np.unique(starts[:, 0]), np.unique(starts[:, 1])
    if len(xs) * len(ys) != len(starts) or len(xs) < 2 or len(ys) < 2:
        return None
    order = np.lexsort((starts[:, 0], starts[:, 1]))
    ordered = starts[order]
    expected = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return (xs, ys, order) if np.array_equal(ordered, expected) else None


def plot_basins(batch, problem, ax=None, *, starts=None, radius: float | None = None, title: str | None = None,
                legend: bool | Mapping = True, save=None):
    """Colour each start of a grid by the minimum its run reached.

    One colour per known minimum (the legend gives its coordinates and how many
    starts reached it), black for exploded runs, light grey for runs that hit
    ``max_iters``, white for runs that converged elsewhere (a local minimum or
    a saddle; shown only if there are any). Gold stars mark the minima.

    Args:
      batch: the ``BatchResult`` of a batched run of a 2-D problem.
      problem: the problem (dim 2).
      ax: axes to draw on; a new figure if None.
      starts: the starts of the batch, shape ``[n, 2]``; if None, the batch must
        come from ``basin_grid(problem, k)`` (n = k * k).
      radius: how close to a minimum a converged run must end to count as
        reaching it (default: 2 % of the box's diagonal).
      title: the axes title (default: the problem's name).
      legend: draw the legend; a mapping is passed on to ``ax.legend`` (``loc``, ...).
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
    from matplotlib.patches import Patch

    _check_dim(problem, 2, "plot_basins")
    n = len(batch)
    if starts is None:
        k = int(round(math.sqrt(n)))
        if k * k != n:
            raise ValueError(f"the batch has {n} rows, not a k x k grid; pass starts= (shape [{n}, 2]).")
        starts = basin_grid(problem, k)
    starts = np.asarray(starts, dtype=np.float64)
    if starts.shape != (n, 2):
        raise ValueError(f"starts has shape {list(starts.shape)}; the batch needs [{n}, 2].")
    category, names = basin_categories(batch, problem, radius)
    m = len(problem.minima)
    palette = _colors(max(m, 1))
    colors = [to_rgba(c) for c in palette[:m]] + [to_rgba(EXPLODED_COLOR), to_rgba(UNCONVERGED_COLOR),
                                                  to_rgba(ELSEWHERE_COLOR)]
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors))

    fig, ax = _axes(ax, figsize=(9.0, 5.4))
    grid = _as_grid(starts)
    if grid is not None:
        xs, ys, order = grid
        ax.pcolormesh(xs, ys, category[order].reshape(len(ys), len(xs)), cmap=cmap, norm=norm, shading="nearest",
                      rasterized=True)
    else:
        ax.scatter(starts[:, 0], starts[:, 1], c=category, cmap=cmap, norm=norm, marker="s", s=12, linewidths=0)
    minima = np.asarray(problem.minima, dtype=np.float64)
    ax.plot(minima[:, 0], minima[:, 1], ls="none", marker="*", ms=15, color="gold", mec="black")

    counts = np.bincount(category, minlength=len(colors))
    shown = [c for c in range(len(colors)) if c < m + 2 or counts[c] > 0]  # "elsewhere" only when present
    handles = [Patch(facecolor=colors[c], edgecolor="0.3") for c in shown]
    labels = [f"{names[c]}: {counts[c]:,}" for c in shown]
    _legend(ax, legend, handles, labels, title="reached (starts)", loc="center left", bbox_to_anchor=(1.01, 0.5),
            title_fontsize="small")
    ax.set_xlim(starts[:, 0].min(), starts[:, 0].max())
    ax.set_ylim(starts[:, 1].min(), starts[:, 1].max())
    ax.set_aspect("equal" if problem.domain[0][1] - problem.domain[0][0] == problem.domain[1][1]
                  - problem.domain[1][0] else "auto")
    ax.set_xlabel("start x")
    ax.set_ylabel("start y")
    ax.set_title(title or f"{problem.name}: basins of attraction")
    return _finish(fig, save)
