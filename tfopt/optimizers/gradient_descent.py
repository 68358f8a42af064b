"""Gradient descent.

    x <- x - lr * g

Sparse gradients (``tf.IndexedSlices``) update only the touched rows
(a scatter), without building a dense gradient. Dense steps run as tfopt's
native op over all variables by default (``tfopt.kernels.native``), else as one
``ResourceApplyGradientDescent`` kernel per variable: the same numbers (``tfopt.kernels.fused``).
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core.optimizer import Optimizer
from tfopt.kernels import fused, native


def gradient_descent_update(grad: tf.Tensor, learning_rate: tf.Tensor) -> tf.Tensor:
    """The step ``lr * g`` that gradient descent subtracts from x."""
    return learning_rate * grad


class GradientDescent(Optimizer):
    """Plain gradient descent: ``x <- x - lr * g``.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      **kwargs: ``fused``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
        The native op and the fused kernel (``ResourceApplyGradientDescent``) are
        bit-identical to the plain ops, so ``fused=None`` (default) and ``True``
        use them; ``False`` runs the plain ops.
    """

    _fused_is_exact = True

    def update(self, grad, slots, *, learning_rate, **_):
        return gradient_descent_update(grad, learning_rate), {}

    def _update_sparse(self, values, *, learning_rate, **_):
        return gradient_descent_update(values, learning_rate)

    def _apply_fused(self, grad, variable, slots, *, learning_rate, **_):
        fused.gradient_descent(variable, grad, learning_rate)

    def _apply_multi(self, variables, grads, slots, *, learning_rate, **_):
        native.gradient_descent(variables, grads, learning_rate)
