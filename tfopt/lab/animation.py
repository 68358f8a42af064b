"""Animated GIFs of convergence runs: several optimizers moving over a problem, step by step.

``animate_paths(results, problem, "runs.gif")`` takes what ``plotting.plot_paths_2d``
takes (a mapping label -> ``ConvergenceResult`` with its recorded path) and writes
a GIF:

* a 2-D problem: the runs' trails grow over the log-spaced loss contours of
  ``plot_paths_2d`` (same colours, same start and end markers, the known minima
  as gold stars), each run's current point a filled dot;
* a 1-D problem: the runs' current points slide along the curve
  ``loss(x) - f_min`` (log scale), with their trails as small dots.

The frames are rendered with matplotlib's Agg canvas and written with Pillow
(which ships with matplotlib): the static background (contours, colour bar,
legend) is drawn once and only the moving artists are drawn over a copy of it
per frame. ``FuncAnimation`` with ``PillowWriter`` redraws the whole figure
(and its layout) for every frame: about 20 times slower for the same GIF.

Frame k shows every run after ``steps[k]`` updates (a run that stopped earlier
sits on its end marker, by status). The steps are log-spaced by default, so the
first iterations, where most of the motion is, are shown one by one and a long
tail is summarised; ``spacing="linear"`` spaces them evenly. At most ``frames``
frames (default 100), plus a pause on the last; small by default (72 dpi, about
100 KB for three runs). matplotlib is imported only when called; no pyplot, no
global style change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["animate_paths", "frame_steps"]


def frame_steps(updates: int, frames: int = 100, spacing: str = "log") -> np.ndarray:
    """The update counts shown by the frames: ``0`` (the starts) to ``updates``, at most ``frames`` of them.

    ``spacing="log"``: 0, then integers geometrically spaced from 1 to ``updates`` (every step while they
    are closer than one apart); ``"linear"``: evenly spaced. Always increasing and ending at ``updates``.
    """
    if spacing not in ("log", "linear"):
        raise ValueError(f"spacing must be 'log' or 'linear', got {spacing!r}.")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}.")
    updates = max(int(updates), 0)
    if updates + 1 <= frames:
        return np.arange(updates + 1)
    if spacing == "linear":
        return np.unique(np.round(np.linspace(0, updates, frames)).astype(np.int64))
    # Geometric spacing with at least one update between frames: grow the count until `frames` distinct steps.
    count = frames - 1
    while True:
        steps = np.unique(np.round(np.geomspace(1, updates, count)).astype(np.int64))
        if len(steps) >= frames - 1 or count > 4 * frames:
            return np.concatenate([[0], steps[np.linspace(0, len(steps) - 1, min(len(steps), frames - 1))
                                              .round().astype(np.int64)]])
        count += frames - 1 - len(steps)


def animate_paths(results: Mapping[str, Any], problem, path: str | os.PathLike, *, init=None, frames: int = 100,
                  fps: int = 12, dpi: int = 72, spacing: str = "log", pause: float = 1.5,
                  title: str | None = None, figsize: tuple[float, float] | None = None) -> Path:
    """Write a GIF of the runs in ``results`` moving over ``problem`` (dim 1 or 2), step by step.

    Args:
      results: mapping label -> ``ConvergenceResult`` with its path (``record_path=True``);
        the label is what the legend says, e.g. ``"Adam lr=0.1"``.
      problem: the ``tfopt.problems.Problem`` the runs minimised (dim 1 or 2).
      path: the ``.gif`` file to write.
      init: the runs' start if not ``problem.default_init`` (results do not record it).
      frames: the most frames drawn (>= 2; the steps are subsampled, see ``frame_steps``).
      fps: frames per second.
      dpi: resolution (the default 6.4 x 5.6 inch figure at 72 dpi is 460 x 403 pixels).
      spacing: ``"log"`` (default) or ``"linear"`` spacing of the frames' steps.
      pause: seconds the last frame is held before the GIF loops.
      title: the title's first part (default: the problem's name); the current step is appended.
      figsize: the figure size in inches.

    Returns:
      The path written.

    Raises:
      ValueError: before drawing, on a problem of another dimension, a run without a recorded path,
        a path that does not end in ``.gif``, bad ``frames``/``fps``/``spacing``.
    """
    from tfopt.lab import plotting

    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"animate_paths writes a GIF; {str(path)!r} does not end in .gif.")
    dim = getattr(problem, "dim", None)
    if dim not in (1, 2):
        raise ValueError(f"animate_paths needs a problem of dim 1 or 2; {getattr(problem, 'name', problem)!r} "
                         f"has dim {dim}.")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be an integer >= 1, got {fps!r}.")
    items = plotting._check_results(results)
    if not items:
        raise ValueError("results is empty: give at least one run.")
    runs = [_Run(label, result, problem, init, color)
            for (label, result), color in zip(items, plotting._colors(len(items)))]
    steps = frame_steps(max(len(r.points) - 1 for r in runs), frames, spacing)
    fig, draw = (_scene_2d if dim == 2 else _scene_1d)(runs, problem, figsize, title or problem.name)
    images = _render(fig, draw, steps, dpi)
    durations = [1000 / fps] * len(images)
    durations[-1] += 1000 * pause
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def _render(fig, draw, steps, dpi) -> list:
    """The frames as Pillow images: the static background drawn once, the moving artists blitted over it.

    ``draw(step)`` updates the moving artists and returns them. Every frame is quantized to the palette
    of the last one (which shows every run), without dithering, so the GIF compresses well.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    moving = draw(int(steps[-1]))  # the widest title: the layout makes room for it
    for artist in moving:
        artist.set_animated(True)
    canvas.draw()  # the layout and the static artists, once
    fig.set_layout_engine("none")
    background = canvas.copy_from_bbox(fig.bbox)
    frames = []
    for step in steps:
        canvas.restore_region(background)
        for artist in draw(int(step)):
            fig.draw_artist(artist)
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    palette = frames[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]


class _Run:
    """One run's points (the start, then x after each update), clipped for drawing, and how it ended."""

    def __init__(self, label, result, problem, init, color):
        from tfopt.lab import plotting

        points = plotting._finite(np.asarray(result.path, dtype=np.float64).reshape(len(result.path), -1))
        start = plotting._start(result, problem, init)
        if start is not None:
            points = np.concatenate([start[None], points])
        self.label = f"{label} ({plotting._status_text(result)})"
        self.status, self.color = result.status, color
        points[~np.isfinite(points).all(axis=1)] = np.nan
        self.points = points
        self.box = np.asarray(problem.domain, dtype=np.float64).T
        last = np.flatnonzero(np.isfinite(points).all(axis=1))
        self.last = int(last[-1]) if last.size else -1

    def at(self, step: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """(trail, head, ended): the points up to ``step`` updates, the current one, whether the run is over.

        The head is clipped into the problem's box, so an exploded run's cross sits where it left it.
        """
        k = min(step, len(self.points) - 1)
        head = np.clip(self.points[min(k, self.last)], *self.box) if self.last >= 0 else None
        return self.points[:k + 1], head, step >= len(self.points) - 1


def _head_style(run: _Run, ended: bool) -> dict:
    from tfopt.lab import plotting

    if ended:
        return {"marker": plotting.END_MARKERS.get(run.status, "o"), "ms": 10, "mec": "black", "mew": 1}
    return {"marker": "o", "ms": 8, "mec": "white", "mew": 1.2}


def _scene_2d(runs, problem, figsize, title):
    """The contour background (drawn once) and the per-frame update of the trails and heads."""
    from matplotlib.figure import Figure

    from tfopt.lab import plotting

    fig = Figure(figsize=figsize or (6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    plotting._colorbar(fig, ax, plotting._contour(ax, problem, problem.domain), True)
    minima = np.asarray(problem.minima, dtype=np.float64)
    ax.plot(minima[:, 0], minima[:, 1], ls="none", marker="*", ms=15, color="gold", mec="black", zorder=7,
            label="known minimum" if len(minima) == 1 else "known minima")
    artists = []
    for run in runs:
        start = run.points[0]
        ax.plot(*start, ls="none", marker="o", ms=9, mfc="white", mec=run.color, mew=2.2, zorder=5)
        (trail,) = ax.plot([], [], color=run.color, lw=2.2, path_effects=plotting._outline(), zorder=3)
        (head,) = ax.plot([], [], ls="none", color=run.color, zorder=6, clip_on=False, label=run.label,
                          **_head_style(run, False))
        artists.append((run, trail, head))
    ax.set_xlim(*problem.domain[0])
    ax.set_ylim(*problem.domain[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper right", fontsize="x-small", framealpha=0.9)

    def draw(step):
        for run, trail, head in artists:
            points, current, ended = run.at(step)
            trail.set_data(points[:, 0], points[:, 1])
            head.set_data(*([[v] for v in current] if current is not None else ([], [])))
            head.set(**_head_style(run, ended))
        ax.set_title(f"{title}: after {step} update{'s' * (step != 1)}")
        return [trail for _, trail, _ in artists] + [head for _, _, head in artists] + [ax.title]

    return fig, draw


def _scene_1d(runs, problem, figsize, title):
    """The curve ``loss - f_min`` over the domain (log y) and the per-frame update of the runs' points on it."""
    from matplotlib.figure import Figure

    from tfopt.lab import plotting

    fig = Figure(figsize=figsize or (6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    (lo, hi), = problem.domain
    xs = np.linspace(lo, hi, 600)
    floor = plotting._positive(plotting._gap(problem, xs[:, None])).min()

    def height(x):
        return np.maximum(plotting._gap(problem, np.asarray(x, dtype=np.float64).reshape(-1, 1)), floor)

    ax.plot(xs, height(xs), color="0.3", lw=1.5, zorder=2)
    minima = [m[0] for m in problem.minima]
    ax.plot(minima, height(minima), ls="none", marker="*", ms=15, color="gold", mec="black", zorder=7,
            label="known minimum" if len(minima) == 1 else "known minima")
    artists = []
    for run in runs:
        (trail,) = ax.plot([], [], ls="none", marker="o", ms=3, color=run.color, alpha=0.5, zorder=3)
        (head,) = ax.plot([], [], ls="none", color=run.color, zorder=6, clip_on=False, label=run.label,
                          **_head_style(run, False))
        artists.append((run, trail, head))
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("x")
    ax.set_ylabel("loss − f_min (log scale)")
    ax.legend(loc="upper right", fontsize="x-small", framealpha=0.9)

    def draw(step):
        for run, trail, head in artists:
            points, current, ended = run.at(step)
            trail.set_data(points[:, 0], height(points[:, 0]))
            head.set_data(*(([current[0]], height(current[:1])) if current is not None else ([], [])))
            head.set(**_head_style(run, ended))
        ax.set_title(f"{title}: after {step} update{'s' * (step != 1)}")
        return [trail for _, trail, _ in artists] + [head for _, _, head in artists] + [ax.title]

    return fig, draw
