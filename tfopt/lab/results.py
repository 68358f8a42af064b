"""What ``tfopt.convergence_test`` returns: one run, or a batch of runs.

``path[k]`` is x after update k + 1 and ``losses[k]`` the loss at ``path[k]``, so
``losses[-1] == loss_final`` and ``path[-1] == x_final`` whenever a step was taken.
A run that stops before its update at iteration ``iterations`` (it exploded,
or met ``grad_tol``) has ``iterations - 1`` rows of path; otherwise ``iterations``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RUNNING, CONVERGED, EXPLODED, MAX_ITERS, CONVERGED_BEFORE_UPDATE = range(5)
"""Status codes inside the compiled loop (``CONVERGED_BEFORE_UPDATE``: met ``grad_tol``)."""

_NAMES = np.array(["max_iters", "converged", "exploded", "max_iters", "converged"])


@dataclasses.dataclass(frozen=True)
class ConvergenceResult:
    """One run of ``convergence_test``.

    Attributes:
      status: ``"converged"``, ``"exploded"`` or ``"max_iters"``.
      iterations: the iteration at which the run stopped (1-based, like the guide).
      path: ``[updates, dim]``: x after each update; ``None`` if not recorded.
      losses: ``[updates]``: the loss at each row of ``path``; ``None`` if not recorded.
      x_final: ``[dim]``: where the run stopped (for an exploded run: the last x
        before the explosion, whose gradient or loss is not finite).
      loss_final: the loss at ``x_final``.
      nearest_minimum: ``[dim]``: the problem's known minimum nearest to ``x_final``
        (``None`` for a plain loss function; NaN if ``x_final`` is not finite).
      distance_to_minimum: Euclidean distance from ``x_final`` to it (or ``None``).
      wall_time: seconds the call took (for a row of a batch: the whole batch).
    """

    status: str
    iterations: int
    path: np.ndarray | None
    losses: np.ndarray | None
    x_final: np.ndarray
    loss_final: float
    nearest_minimum: np.ndarray | None
    distance_to_minimum: float | None
    wall_time: float

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    def __repr__(self) -> str:
        return (f"ConvergenceResult(status={self.status!r}, iterations={self.iterations}, "
                f"x_final={self.x_final}, loss_final={self.loss_final:.7g}, wall_time={self.wall_time:.3g}s)")


class BatchResult:
    """n runs of ``convergence_test`` made in one loop (init of shape ``[n, dim]``).

    Attributes (NumPy arrays, first axis n): ``status`` (strings), ``iterations``,
    ``x_final`` ``[n, dim]``, ``loss_final``, ``nearest_minimum`` ``[n, dim]`` and
    ``distance_to_minimum`` (``None`` for a plain loss function); ``wall_time``
    for the whole batch. ``batch[i]`` is row i as a ``ConvergenceResult`` with its
    own path; ``len(batch) == n``; iterating yields the rows.
    """

    def __init__(self, status, iterations, updates, x_final, loss_final, path, losses, minima, wall_time):
        self.status, self.iterations, self._updates = status, iterations, updates
        self.x_final, self.loss_final = x_final, loss_final
        self._path, self._losses = path, losses  # [T, n, dim], [T, n] or None
        self.wall_time = wall_time
        self.nearest_minimum, self.distance_to_minimum = _nearest(x_final, minima)

    @classmethod
    def from_loop(cls, out: dict, problem, wall_time: float) -> BatchResult:
        """Build from the compiled loop's outputs (NumPy): codes, and losses before each update."""
        codes, iterations, loss_final = out["status"], out["iterations"], out["loss_final"]
        updates = iterations - np.isin(codes, (EXPLODED, CONVERGED_BEFORE_UPDATE))
        losses = None
        if "path" in out:
            # losses_before[k] is the loss at x before update k + 1, i.e. at path[k - 1]:
            # shift by one and end with loss_final, the loss at path[updates - 1].
            losses = np.concatenate([out["losses_before"][1:], loss_final[None]], axis=0)
            rows = np.arange(len(codes))
            last = np.minimum(iterations - 1, len(losses) - 1)
            losses[last, rows] = loss_final  # row r's loss after its final update
        minima = None if problem is None else np.asarray(problem.minima, dtype=np.float64)
        return cls(_NAMES[codes], iterations.astype(np.int64), updates, out["x_final"], loss_final,
                   out.get("path"), losses, minima, wall_time)

    def __len__(self) -> int:
        return len(self.status)

    def __getitem__(self, i: int) -> ConvergenceResult:
        i = range(len(self))[i]
        k = int(self._updates[i])
        return ConvergenceResult(
            status=str(self.status[i]),
            iterations=int(self.iterations[i]),
            path=None if self._path is None else self._path[:k, i].copy(),
            losses=None if self._losses is None else self._losses[:k, i].copy(),
            x_final=self.x_final[i],
            loss_final=float(self.loss_final[i]),
            nearest_minimum=None if self.nearest_minimum is None else self.nearest_minimum[i],
            distance_to_minimum=None if self.distance_to_minimum is None else float(self.distance_to_minimum[i]),
            wall_time=self.wall_time,
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        counts = {s: int((self.status == s).sum()) for s in ("converged", "exploded", "max_iters")}
        return f"BatchResult(n={len(self)}, {counts}, wall_time={self.wall_time:.3g}s)"


def _nearest(x, minima):
    """Nearest known minimum of each row and the distance to it (float64)."""
    if minima is None or len(minima) == 0:
        return None, None
    distances = np.linalg.norm(x.astype(np.float64)[:, None, :] - minima[None], axis=-1)  # [n, m]
    with np.errstate(invalid="ignore"):
        best = np.argmin(np.where(np.isnan(distances), np.inf, distances), axis=1)
    nearest = minima[best]
    distance = distances[np.arange(len(x)), best]
    nearest[~np.isfinite(distance)] = np.nan
    return nearest, distance
