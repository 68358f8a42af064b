"""Gradient descent with momentum (heavy ball), optionally Nesterov.

With velocity slot ``d`` (one per variable, starts at 0):

    d <- lr * g + momentum * d
    x <- x - d                              (classical)
    x <- x - (lr * g + momentum * d)        (Nesterov, with the new d)

This is Keras's ``SGD(momentum=...)`` with the velocity's sign flipped; the
TensorFlow guide's class kept one ``d`` for all variables, which is a bug.
By default a step runs tfopt's native op over all variables (``tfopt.kernels.native``),
else TensorFlow's ``ResourceApplyMomentum`` kernel: the same numbers (``tfopt.kernels.fused``).
"""

from __future__ import annotations

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer
from tfopt.kernels import fused, native


def momentum_update(grad, velocity, learning_rate, momentum, nesterov: bool):
    """Return ``(delta, new_velocity)`` for one variable; x <- x - delta."""
    scaled = learning_rate * grad
    velocity = scaled + momentum * velocity
    delta = scaled + momentum * velocity if nesterov else velocity
    return delta, velocity


class Momentum(Optimizer):
    """Gradient descent with momentum.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      momentum: in [0, 1).
      nesterov: use Nesterov's look-ahead step.
      **kwargs: ``fused``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
        The native op and the fused kernel (``lr * g``, then ``ResourceApplyMomentum``)
        are bit-identical to the plain ops and keep ``velocity`` = ``d``, so
        ``fused=None`` (default) and ``True`` use them; ``False`` runs the plain ops.
    """

    slot_names = ("velocity",)
    _fused_is_exact = True
    momentum = Hyperparameter(0.7, check=checks.unit_interval)
    nesterov = Option(False, check=checks.boolean)

    def update(self, grad, slots, *, learning_rate, momentum, **_):
        delta, velocity = momentum_update(grad, slots["velocity"], learning_rate, momentum, self.nesterov)
        return delta, {"velocity": velocity}

    def _apply_fused(self, grad, variable, slots, *, learning_rate, momentum, **_):
        fused.momentum(variable, slots["velocity"], grad, learning_rate, momentum, self.nesterov)

    def _apply_multi(self, variables, grads, slots, *, learning_rate, momentum, **_):
        native.momentum(variables, [s["velocity"] for s in slots], grads, learning_rate, momentum, self.nesterov)
