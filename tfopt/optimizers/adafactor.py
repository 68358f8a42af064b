"""Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
ICML, Algorithms 4 and 5, without momentum), as Keras 3's ``keras.optimizers.Adafactor``.

At step t, with ``G = g^2 + eps_1`` and the mean square ``RMS(a) = sqrt(mean(a^2))`` over all the
variable's elements:

    rho_t   = min(lr, 1 / sqrt(t))                  (the relative step size)
    alpha_t = max(eps_2, RMS(x)) * rho_t            (scaled by the parameter's scale)
    beta_t  = 1 - t^beta_2_decay                    (0 at t = 1: the first moment is G itself)

For a variable of rank >= 2 the second moment is factored over its last two dimensions: row means
``R`` (shape ``x.shape[:-1]``) and column means ``C`` (shape ``x.shape[:-2] + x.shape[-1:]``):

    R <- beta_t * R + (1 - beta_t) * mean(G, axis=-1)
    C <- beta_t * C + (1 - beta_t) * mean(G, axis=-2)
    V = (R / mean(R, axis=-1))[..., :, None] * C[..., None, :]

and for rank 0 or 1 it is kept whole, ``V <- beta_t * V + (1 - beta_t) * G``. Then

    U = g / sqrt(V);   U_hat = U / max(1, RMS(U) / clip_threshold);   x <- x - alpha_t * U_hat

Keras's arithmetic, operation for operation, in the variable's compute dtype. As in Keras, ``rho_t`` is
``min(lr, 1/sqrt(t))`` whatever ``relative_step`` says (Keras's ``relative_step`` caps ``lr`` at
``1/sqrt(t)`` first, which changes nothing): the argument is kept for Keras's signature and config.

Slots (``slot_shape``): ``r`` and ``c`` have the factored shapes above and ``v`` is a scalar placeholder for a
variable of rank >= 2 (``V`` is recomputed from ``R`` and ``C``: memory per parameter ``(m + n) / (m n)`` for
an ``m x n`` matrix); for rank < 2, ``v`` has the variable's shape and ``r``, ``c`` are scalar placeholders (1
per parameter). Keras keeps a full-size ``velocity`` for every variable as well.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core._ops import divide_by_sqrt
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def adafactor_update(grad, r, c, v, *, param, step, learning_rate, beta_2_decay, epsilon_1, epsilon_2,
                     clip_threshold):
    """Return ``(delta, r, c, v)`` for one variable; x <- x - delta. Factored when ``grad``'s rank is >= 2
    (then ``v`` is returned as is), else ``r`` and ``c`` are returned as they are."""
    rho = tf.minimum(learning_rate, divide_by_sqrt(tf.ones_like(step), step))
    alpha = tf.maximum(epsilon_2, _rms(param)) * rho
    regulated_square = tf.square(grad) + epsilon_1
    beta = 1.0 - tf.pow(step, beta_2_decay)
    if grad.shape.rank >= 2:
        r = beta * r + (1.0 - beta) * tf.reduce_mean(regulated_square, axis=-1)
        c = beta * c + (1.0 - beta) * tf.reduce_mean(regulated_square, axis=-2)
        velocity = tf.expand_dims(r / tf.reduce_mean(r, axis=-1, keepdims=True), -1) * tf.expand_dims(c, -2)
    else:
        v = beta * v + (1.0 - beta) * regulated_square
        velocity = v
    u = divide_by_sqrt(grad, velocity)
    u_hat = u / tf.maximum(tf.ones_like(step), _rms(u) / clip_threshold)
    return alpha * u_hat, r, c, v


class Adafactor(Optimizer):
    """Adafactor with Keras 3's arguments, defaults and numbers.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule); the step size is
        ``min(lr, 1/sqrt(t))`` times the parameter's RMS.
      beta_2_decay: <= 0; the second moment's decay is ``1 - t^beta_2_decay`` (paper: -0.8).
      epsilon_1: >= 0, added to the squared gradient (paper: 1e-30).
      epsilon_2: >= 0, the smallest parameter scale (paper: 1e-3).
      clip_threshold: > 0, ``d``: the update's RMS is clipped to it.
      relative_step: kept for Keras's signature; as in Keras it changes nothing (see the module doc).
      **kwargs: ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``r`` and ``c`` (factored row and column moments) and ``v`` (the whole second moment of a
    variable of rank < 2); see ``slot_shape``.
    """

    slot_names = ("r", "c", "v")
    beta_2_decay = Hyperparameter(-0.8, check=checks.in_range(float("-inf"), 0.0, closed=True))
    epsilon_1 = Hyperparameter(1e-30, check=checks.non_negative)
    epsilon_2 = Hyperparameter(1e-3, check=checks.non_negative)
    clip_threshold = Hyperparameter(1.0, check=checks.positive)
    relative_step = Option(True, check=checks.boolean)

    def slot_shape(self, name: str, variable_shape: tf.TensorShape) -> tf.TensorShape:
        """``r``: ``shape[:-1]``, ``c``: ``shape[:-2] + shape[-1:]``, ``v``: ``()`` for rank >= 2; for rank < 2
        ``v`` has the variable's shape and ``r``, ``c`` are ``()``."""
        factored = variable_shape.rank >= 2
        if name == "r":
            return variable_shape[:-1] if factored else tf.TensorShape([])
        if name == "c":
            return variable_shape[:-2].concatenate(variable_shape[-1:]) if factored else tf.TensorShape([])
        return tf.TensorShape([]) if factored else variable_shape

    def update(self, grad, slots, *, param, step, learning_rate, beta_2_decay, epsilon_1, epsilon_2,
               clip_threshold, **_):
        delta, r, c, v = adafactor_update(
            grad, slots["r"], slots["c"], slots["v"], param=param, step=step, learning_rate=learning_rate,
            beta_2_decay=beta_2_decay, epsilon_1=epsilon_1, epsilon_2=epsilon_2, clip_threshold=clip_threshold)
        return delta, {"r": r, "c": c, "v": v}
