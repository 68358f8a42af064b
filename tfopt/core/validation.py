"""Argument checks shared by every optimizer.

Each check raises before anything changes and names the culprit, the way
torch.optim does in ``__init__`` (``ValueError(f"Invalid learning rate: {lr}")``)
and Sonnet does on every call.
"""

from __future__ import annotations

import math
import warnings

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.variables import as_tf_variable, display_name, variable_key


def check_non_negative(name: str, value) -> None:
    """``value >= 0`` and not NaN (see ``tfopt.checks.non_negative``)."""
    checks.non_negative(name, value)


def check_unit_interval(name: str, value) -> None:
    """``0 <= value < 1`` (see ``tfopt.checks.unit_interval``)."""
    checks.unit_interval(name, value)


def check_clip(name: str, value) -> None:
    """A clipping threshold is ``None`` or a number > 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"Invalid {name}: {value!r}; it must be None or a finite number > 0.")


def gradient_variable_pairs(grads_and_vars, variables=None) -> list[tuple]:
    """Normalise both call forms to a list of ``(gradient, variable)`` pairs.

    ``apply_gradients(zip(grads, vars))`` or ``apply_gradients(grads, vars)``.
    (With ``zip`` unequal lengths cannot be seen: ``zip`` truncates.)
    """
    if variables is None:
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(
                    f"Item {i} of grads_and_vars is {type(pair).__name__}, not a (gradient, variable) "
                    "pair: call apply_gradients(zip(grads, variables)) or apply_gradients(grads, variables)."
                )
        return [tuple(p) for p in pairs]
    grads, variables = list(grads_and_vars), list(variables)
    if len(grads) != len(variables):
        raise ValueError(f"Got {len(grads)} gradients for {len(variables)} variables; they must pair up one to one.")
    return list(zip(grads, variables))


def _gradient_shape(grad) -> tf.TensorShape:
    if isinstance(grad, tf.IndexedSlices):
        return tf.TensorShape([None]).concatenate(grad.values.shape[1:])
    return grad.shape


@tf.autograph.experimental.do_not_convert  # Python checks only: converting them only slows tracing
def check_pairs(pairs: list[tuple]) -> list[tuple]:
    """Validate ``(gradient, variable)`` pairs; return ``(gradient, tf.Variable)`` pairs to apply.

    Raises on a non-variable target, a variable that is not floating point, a variable given twice, a gradient whose
    shape differs from its variable, or all gradients ``None``. Pairs with a
    ``None`` gradient are dropped with one warning naming their variables.
    """
    seen, checked, missing = set(), [], []
    for i, (grad, variable) in enumerate(pairs):
        tf_variable = as_tf_variable(variable, i)
        key = variable_key(tf_variable)
        if key in seen:
            raise ValueError(f"Variable {display_name(variable)!r} appears more than once in one apply_gradients call.")
        seen.add(key)
        if not tf_variable.dtype.is_floating:
            raise TypeError(f"Variable {display_name(variable)!r} has dtype {tf_variable.dtype.name}; "
                            "optimizers update floating-point variables only.")
        if grad is None:
            missing.append(display_name(variable))
            continue
        if not isinstance(grad, (tf.Tensor, tf.IndexedSlices)):
            grad = tf.convert_to_tensor(grad, dtype_hint=tf_variable.dtype)
        shape = _gradient_shape(grad)
        if shape != tf_variable.shape and not shape.is_compatible_with(tf_variable.shape):  # (== is the fast check)
            raise ValueError(
                f"Gradient for variable {display_name(variable)!r} has shape {shape}, "
                f"but the variable has shape {tf_variable.shape}."
            )
        checked.append((grad, tf_variable))
    if not checked:
        raise ValueError(f"No gradients provided for any variable: {missing}.")
    if missing:
        warnings.warn(f"Gradients do not exist for variables {missing}; they are left unchanged.", stacklevel=3)
    return checked
