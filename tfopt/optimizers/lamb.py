"""LAMB, layer-wise adaptive moments (You et al., 2020, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes", Algorithm 2, with phi the identity).

With slots ``m`` and ``v`` (per variable, start at 0) and t the 1-based step:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)     # Adam's direction
    ratio = ||x|| / ||r||   if ||x|| > 0 and ||r|| > 0, else 1   # trust ratio
    x <- x - lr * ratio * r

The norms are Euclidean norms over the whole variable (one "layer"), taken from x before
the step. ``keras.optimizers.Lamb`` has the same arguments and defaults
(``learning_rate=0.001``, ``beta_1=0.9``, ``beta_2=0.999``, ``epsilon=1e-7``) and the same
epsilon placement (the paper's: outside the bias-corrected root, unlike Keras's Adam), so
the two agree for every eps (to float32 rounding: Keras forms ``b^t`` in float32 and
updates the moments as ``m + (g - m) * (1 - b1)``). ``weight_decay`` is the base
optimizer's, as Keras's (default None): ``x <- x - x * wd * lr`` before the step, outside the
trust ratio, whose ``||x||`` is then the decayed x's. That is not the paper's decay, which adds
``wd * x`` to r inside the trust ratio (``ratio = ||x|| / ||r + wd*x||``): not offered.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer
from tfopt.optimizers.adam import Adam


def lamb_update(grad, m, v, param, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                correction_1, correction_2, epsilon):
    """Return ``(delta, m, v)`` for one variable; x <- x - delta."""
    m = beta_1 * m + one_minus_beta_1 * grad
    v = beta_2 * v + one_minus_beta_2 * tf.square(grad)
    r = (m / correction_1) / (tf.sqrt(v / correction_2) + epsilon)
    param_norm = tf.sqrt(tf.reduce_sum(tf.square(param)))
    r_norm = tf.sqrt(tf.reduce_sum(tf.square(r)))
    one = tf.ones_like(param_norm)
    ratio = tf.where(param_norm > 0, tf.where(r_norm > 0, param_norm / tf.where(r_norm > 0, r_norm, one), one), one)
    return ratio * learning_rate * r, m, v


class Lamb(Optimizer):
    """LAMB: Adam's direction scaled per variable by the trust ratio ``||x|| / ||r||``.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      beta_1, beta_2: moment decay rates ``b1``, ``b2`` in [0, 1).
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)``.
      **kwargs: ``weight_decay`` (the base optimizer's, as Keras's: decoupled, before the step),
        ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("m", "v")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    step_values = Adam.step_values  # Adam's bias corrections

    def update(self, grad, slots, *, param, learning_rate, beta_1, one_minus_beta_1, correction_1, beta_2,
               one_minus_beta_2, correction_2, epsilon, **_):
        delta, m, v = lamb_update(grad, slots["m"], slots["v"], param, learning_rate=learning_rate, beta_1=beta_1,
                                  one_minus_beta_1=one_minus_beta_1, correction_1=correction_1, beta_2=beta_2,
                                  one_minus_beta_2=one_minus_beta_2, correction_2=correction_2, epsilon=epsilon)
        return delta, {"m": m, "v": v}
