"""Yogi (Zaheer, Reddi, Sachan, Kale & Kumar, 2018, "Adaptive Methods for Nonconvex Optimization",
NeurIPS, Algorithm 2), as TensorFlow Addons' ``tfa.optimizers.Yogi``.

Adam's second moment moves additively, by at most ``(1 - b2) g^2`` per step, towards ``g^2``. TFA's
accumulator ``v`` starts at ``initial_accumulator_value`` v0 and TFA adds Adam's bias corrections to the
step size and a proximal L1/L2 step (as ``tf.compat.v1.train.ProximalAdagrad``). With ``m`` starting at
0 and t the 1-based step:

    m <- b1 * m + (1 - b1) * g
    v <- v + (1 - b2) * s(g^2 - v) * g^2        s = sign, or tanh(10 *) with activation="tanh"
    a = lr * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)           (per coordinate)
    y = x - a * m
    x <- sign(y) * max(|y| - l1 * a, 0) / (1 + l2 * a)               (the proximal step)

With l1 = l2 = 0 the last line is ``x <- y``; with l1 = 0 it is TFA's ``y / (1 + l2 a)``. The proximal
form is TFA's ``_solve`` for any l1 and l2 (hyperparameters here, changeable between steps): the same
numbers as TFA's three branches, which it picks once in Python. Epsilon sits outside the root and is not
bias-corrected (TFA's form: the paper's eps, with the corrections folded into the step size).

tfopt's slots start at 0, so the second slot is ``v_change`` = v - v0 (as ``tfopt.Adagrad`` keeps
``sum_of_squares``): ``v = v_change + initial_accumulator_value`` is formed at every step, so v0 is a
hyperparameter like the others; in float32 this rounds differently from TFA's running ``v`` (one more
addition), about 1e-7 relative. TFA's v is ``get_slot(x, "v_change") + initial_accumulator_value``. TFA
has no ``m`` slot when ``beta1 == 0``; tfopt always keeps it (``beta1`` may change between steps), and with
``beta1 = 0`` it is ``g`` exactly, so the numbers are the same. The base's ``weight_decay=`` (off by default)
is applied before the step; TFA's Yogi has none. Sparse gradients are densified: a step with them is the
dense step (TFA's sparse path also decays ``m`` everywhere, but moves ``v`` and x only in touched rows).
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer


def _activation(name: str, value) -> None:
    if value not in ("sign", "tanh"):
        raise ValueError(f"Invalid {name}: {value!r}; it must be 'sign' or 'tanh'.")


def yogi_update(grad, param, m, v_change, *, alpha, beta_1, one_minus_beta_1, one_minus_beta_2, epsilon,
                l1_regularization_strength, l2_regularization_strength, initial_accumulator_value, activation):
    """Return ``(delta, m, v_change)`` for one variable; x <- x - delta.

    ``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)`` is computed once per step by the caller.
    """
    m = beta_1 * m + one_minus_beta_1 * grad
    grad2 = tf.square(grad)
    v = v_change + initial_accumulator_value                      # TFA's accumulator
    difference = grad2 - v
    sign = tf.sign(difference) if activation == "sign" else tf.tanh(10 * difference)
    # (an EnsureShape, a no-op, keeps grappler from reassociating the product with tanh's non-exact factor,
    # so that a tf.function step has the eager step's bits; see tfopt._ops)
    v_change = v_change + tf.ensure_shape(one_minus_beta_2 * sign, sign.shape) * grad2
    per_coordinate = alpha / (tf.sqrt(v_change + initial_accumulator_value) + epsilon)
    moved = param - per_coordinate * m                            # the gradient step
    threshold = l1_regularization_strength * per_coordinate       # the proximal step (TFA's _solve)
    new = tf.where(tf.abs(moved) > threshold,
                   (moved - threshold * tf.sign(moved)) / (1 + l2_regularization_strength * per_coordinate),
                   tf.zeros_like(moved))
    return param - new, m, v_change


class Yogi(Optimizer):
    """Yogi with TFA's arguments, defaults and formulas.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule); TFA's default 0.01.
      beta1, beta2: decay rates of ``m`` and of the step of ``v`` in [0, 1); 0.9, 0.999 (TFA's names).
      epsilon: ``eps`` >= 0, added to ``sqrt(v)``; 1e-3.
      l1_regularization_strength, l2_regularization_strength: >= 0, the proximal step's; 0.0, 0.0.
      initial_accumulator_value: ``v0`` >= 0, where ``v`` starts; 1e-6.
      activation: ``"sign"`` (the paper's) or ``"tanh"`` (``tanh(10 (g^2 - v))``, smooth); "sign".
      **kwargs: ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``m`` and ``v_change`` (TFA's ``v`` minus ``initial_accumulator_value``).
    """

    slot_names = ("m", "v_change")
    learning_rate = Hyperparameter(0.01, check=checks.non_negative, schedulable=True)
    beta1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-3, check=checks.non_negative)
    l1_regularization_strength = Hyperparameter(0.0, check=checks.non_negative)
    l2_regularization_strength = Hyperparameter(0.0, check=checks.non_negative)
    initial_accumulator_value = Hyperparameter(1e-6, check=checks.non_negative)
    activation = Option("sign", check=_activation)

    def step_values(self, *, step, learning_rate, beta1, beta2, **_):
        return dict(alpha=learning_rate * tf.sqrt(1 - beta2**step) / (1 - beta1**step),
                    one_minus_beta_1=1 - beta1, one_minus_beta_2=1 - beta2)

    def update(self, grad, slots, *, param, alpha, beta1, one_minus_beta_1, one_minus_beta_2, epsilon,
               l1_regularization_strength, l2_regularization_strength, initial_accumulator_value, **_):
        delta, m, v_change = yogi_update(
            grad, param, slots["m"], slots["v_change"], alpha=alpha, beta_1=beta1, one_minus_beta_1=one_minus_beta_1,
            one_minus_beta_2=one_minus_beta_2, epsilon=epsilon,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            initial_accumulator_value=initial_accumulator_value, activation=self.activation)
        return delta, {"m": m, "v_change": v_change}
