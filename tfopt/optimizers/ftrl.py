"""FTRL-Proximal (McMahan et al., 2013, "Ad Click Prediction: a View from the Trenches", KDD, Algorithm 1),
with TensorFlow's L2 shrinkage and ``beta``, as Keras 3's ``keras.optimizers.Ftrl``.

Keras keeps an accumulator ``n`` that starts at ``initial_accumulator_value`` (n0) and a linear term
``z`` that starts at 0; with ``p = -learning_rate_power`` (1/2 by default: the paper's per-coordinate
rate ``lr / sqrt(n)``), l1, l2, l2s the regularization strengths:

    g' = g + 2 * l2s * x                                   (L2 shrinkage: on the linear term only)
    n' = n + g^2
    z <- z + g' - (n'^p - n^p) / lr * x
    x <- (clip(z, -l1, l1) - z) / (n'^p / lr + 2 * (l2 + beta / (2 * lr)))
    n <- n'

so ``x`` is 0 where ``|z| <= l1`` (sparsity) and ``-(z - sign(z) * l1) / (n'^p / lr + 2 * l2 + beta / lr)``
elsewhere: the paper's closed form with ``alpha = lr`` and its ``beta`` (in ``(beta + sqrt(n)) / alpha``)
here ``beta``, L2 counted twice as in TensorFlow's ``ApplyFtrlV2``. The new ``x`` depends on the old only
through ``z``: a zero gradient at the first step sets ``x`` to 0 (as Keras and TensorFlow do).

tfopt's slots start at 0, so, as for ``tfopt.Adagrad``, the slot is ``sum_of_squares`` S = n - n0 and each
step adds n0 back (``n = S + n0``, ``n' = (S + g^2) + n0``); the second slot is ``linear`` (z, Keras's name).
The numbers are Keras's float32 operations in Keras's order, except that ``S + n0`` rounds differently from
Keras's running ``n`` and that the base subtracts ``delta = x - x_new`` (``x - (x - x_new)`` need not be
``x_new`` to the last bit): about 1e-7 relative per step (see tests/test_ftrl.py). Keras's accumulator is
``get_slot(x, "sum_of_squares") + initial_accumulator_value``; n0 is a hyperparameter like the others.
``lr = 0`` divides by zero, as in Keras.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer


def ftrl_update(grad, sum_of_squares, linear, *, param, learning_rate, learning_rate_power,
                initial_accumulator_value, l1_regularization_strength, l2_regularization_strength,
                l2_shrinkage_regularization_strength, beta):
    """Return ``(delta, sum_of_squares, linear)`` for one variable; x <- x - delta (Keras's arithmetic)."""
    power = -learning_rate_power
    l2 = l2_regularization_strength + beta / (2.0 * learning_rate)
    shrunk_grad = grad + 2.0 * l2_shrinkage_regularization_strength * param
    accumulator = sum_of_squares + initial_accumulator_value              # Keras's n
    sum_of_squares = sum_of_squares + tf.square(grad)
    new_accumulator = sum_of_squares + initial_accumulator_value          # Keras's n'
    new_root = tf.pow(new_accumulator, power)
    linear = linear + (shrunk_grad - (new_root - tf.pow(accumulator, power)) / learning_rate * param)
    quadratic = new_root / learning_rate + 2.0 * l2
    l1 = l1_regularization_strength
    new_param = (tf.clip_by_value(linear, -l1, l1) - linear) / quadratic
    return param - new_param, sum_of_squares, linear


class Ftrl(Optimizer):
    """FTRL-Proximal with Keras 3's arguments and defaults.

    Args:
      learning_rate: ``lr`` (number > 0 in practice, ``tf.Variable``, or schedule).
      learning_rate_power: ``-p`` <= 0; the per-coordinate rate is ``lr / n^p`` (-0.5: ``lr / sqrt(n)``;
        0: a fixed rate).
      initial_accumulator_value: ``n0`` >= 0, the accumulator's starting value.
      l1_regularization_strength: ``l1`` >= 0 (zeroes coordinates whose ``|z| <= l1``).
      l2_regularization_strength: ``l2`` >= 0, the stabilization penalty.
      l2_shrinkage_regularization_strength: ``l2s`` >= 0, the magnitude penalty (added to the gradient).
      beta: >= 0, the paper's beta (as ``beta / lr`` in the denominator).
      **kwargs: ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``sum_of_squares`` (Keras's ``accumulator`` minus ``initial_accumulator_value``) and ``linear``.
    """

    slot_names = ("sum_of_squares", "linear")
    learning_rate_power = Hyperparameter(-0.5, check=checks.in_range(float("-inf"), 0.0, closed=True))
    initial_accumulator_value = Hyperparameter(0.1, check=checks.non_negative)
    l1_regularization_strength = Hyperparameter(0.0, check=checks.non_negative)
    l2_regularization_strength = Hyperparameter(0.0, check=checks.non_negative)
    l2_shrinkage_regularization_strength = Hyperparameter(0.0, check=checks.non_negative)
    beta = Hyperparameter(0.0, check=checks.non_negative)

    def update(self, grad, slots, **inputs):
        delta, sum_of_squares, linear = ftrl_update(
            grad, slots["sum_of_squares"], slots["linear"],
            **{k: inputs[k] for k in ("param", "learning_rate", "learning_rate_power", "initial_accumulator_value",
                                      "l1_regularization_strength", "l2_regularization_strength",
                                      "l2_shrinkage_regularization_strength", "beta")})
        return delta, {"sum_of_squares": sum_of_squares, "linear": linear}
