"""Ready-made checks for ``tfopt.Hyperparameter(default, check=...)`` and ``tfopt.Option``.

A check is any callable ``check(name, value)`` that raises ``ValueError`` naming the
hyperparameter and the value when the value is out of range; it runs before anything is
stored, on a number or on every element of a variable, the way torch.optim checks its
arguments (``ValueError(f"Invalid learning rate: {lr}")``).

    rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
    decay = tfopt.Hyperparameter(0.5, check=tfopt.checks.in_range(0.0, 1.0, closed=True))
"""

from __future__ import annotations

import numpy as np

__all__ = ["boolean", "closed_unit_interval", "finite", "in_range", "non_negative", "positive", "unit_interval"]


def _values(value) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    elif hasattr(value, "value") and hasattr(value.value, "numpy"):  # a Keras variable
        value = value.value.numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None


def _fail(name: str, value, rule: str):
    raise ValueError(f"Invalid {name}: {value!r}; it must be {rule}.")


def non_negative(name: str, value) -> None:
    """``value >= 0`` and not NaN (learning rate, epsilon, weight decay)."""
    values = _values(value)
    if np.isnan(values).any() or (values < 0).any():
        _fail(name, value, "a number >= 0")


def positive(name: str, value) -> None:
    """``value > 0`` and not NaN."""
    values = _values(value)
    if np.isnan(values).any() or (values <= 0).any():
        _fail(name, value, "a number > 0")


def finite(name: str, value) -> None:
    """Neither NaN nor infinite."""
    if not np.isfinite(_values(value)).all():
        _fail(name, value, "a finite number")


def unit_interval(name: str, value) -> None:
    """``0 <= value < 1`` (momentum, beta_1, beta_2, rho)."""
    values = _values(value)
    if np.isnan(values).any() or (values < 0).any() or (values >= 1).any():
        _fail(name, value, "in [0, 1)")


def closed_unit_interval(name: str, value) -> None:
    """``0 <= value <= 1``."""
    values = _values(value)
    if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        _fail(name, value, "in [0, 1]")


def in_range(low: float, high: float, *, closed: bool = False):
    """A check for ``low <= value < high`` (``closed=True``: ``<= high``)."""

    def check(name: str, value) -> None:
        values = _values(value)
        above = (values > high) if closed else (values >= high)
        if np.isnan(values).any() or (values < low).any() or above.any():
            _fail(name, value, f"in [{low}, {high}{']' if closed else ')'}")

    check.__name__ = f"in_range({low}, {high}{', closed=True' if closed else ''})"
    return check


def boolean(name: str, value) -> None:
    """``True`` or ``False`` (for an ``Option`` such as ``nesterov``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Invalid {name}: {value!r}; it must be True or False.")
