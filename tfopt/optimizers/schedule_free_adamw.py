"""Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled", NeurIPS, arXiv:2405.15682, Algorithm 1
with Adam's second moment, as facebookresearch/schedule_free's ``AdamWScheduleFree``), with the arguments and
defaults of Keras 3's ``keras.optimizers.ScheduleFreeAdamW``.

No learning-rate schedule: the method interpolates and averages instead. It keeps three sequences: ``z`` (the
SGD-like sequence the gradients step, slot ``momentum``), ``x`` (the running average of ``z``: the point to
evaluate) and ``y`` (where the gradient is taken: the variable itself). With t the 1-based step, slots ``z``
(started at the variable's value) and ``v`` (``velocity``, started at 0), the learning rate warmed up
``lr_t = lr * min(t / warmup_steps, 1)`` (``warmup_steps = 0``: no warm-up) and ``c_t = 1 / t``:

    v <- v + (g^2 - v) * (1 - b2)                          (g taken at y)
    z' = z - lr_t * g / (sqrt(v / (1 - b2^t)) + eps)
    x  = (y - (1 - b1) * z) / b1                           (x is not stored: y and z give it)
    x' = (1 - c_t) * x + c_t * z'
    y <- (1 - b1) * z' + b1 * x';   z <- z'

in the variable's compute dtype, in Keras's order of operations. The slot ``momentum`` starts at 0 like every
tfopt slot: at step 1 the rule reads the variable's value as ``z`` (``t == 1``), so every variable must be stepped
from the optimizer's first step on (as in Keras, which builds all of them at once); a variable first stepped at
a later step would start its ``z`` at 0. The base subtracts ``delta = y - y_new``, which gives ``y_new`` exactly
when the two are within a factor 2 of each other (Sterbenz), else to the last bit.

Keras difference: on the TensorFlow backend Keras 3.15's ``ScheduleFreeAdamW`` reads ``momentum.value``, the
live variable, after it has already been updated, so it recovers ``x`` from the new ``z'``:
``x_keras = (y - (1 - b1) * z') / b1 = x + (1 - b1) / b1 * (z - z')`` (on the JAX backend the same Keras code
reads the old ``z``, as the paper and the reference implementation do). tfopt follows the paper; with
``x_keras`` in place of ``x`` (``_recover_x``) it gives Keras's TensorFlow numbers (tests/test_schedule_free_adamw.py
checks both).

Evaluate at ``x``, not at the training point ``y``: ``with opt.evaluation_point(variables): model.evaluate(...)``
puts ``x`` into the variables and restores ``y`` exactly on exit; ``opt.evaluation_weights(variables)`` returns
the ``x`` values; ``opt.assign_evaluation_weights(variables)`` keeps them (end of training).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer, compute_dtype
from tfopt.core.variables import as_tf_variable


def _open_unit_interval(name: str, value) -> None:
    """``0 < value < 1`` (x is recovered by dividing by ``beta_1``)."""
    checks.unit_interval(name, value)
    checks.positive(name, value)


def _check_warmup(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 0.")


class ScheduleFreeAdamW(Optimizer):
    """Schedule-Free AdamW with Keras 3's arguments and defaults; evaluate at ``evaluation_point``.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule; default 0.0025, Keras's).
      beta_1: ``b1`` in (0, 1): the interpolation between ``z`` and ``x``.
      beta_2: ``b2`` in [0, 1): the second moment's decay rate.
      epsilon: ``eps`` >= 0 (default 1e-8, Keras's).
      warmup_steps: the learning rate rises linearly over this many steps (an int >= 0, fixed).
      **kwargs: ``weight_decay`` (as in Keras: ``x <- x - x * wd * lr`` on the variable before the step),
        ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``momentum`` (z) and ``velocity`` (v): 2 per parameter.
    """

    slot_names = ("momentum", "velocity")
    learning_rate = Hyperparameter(0.0025, check=checks.non_negative, schedulable=True)
    beta_1 = Hyperparameter(0.9, check=_open_unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-8, check=checks.non_negative)
    warmup_steps = Option(0, check=_check_warmup)

    def update(self, grad, slots, *, param, learning_rate, beta_1, beta_2, epsilon, step, **_):
        if self.warmup_steps > 0:
            learning_rate = learning_rate * tf.minimum(step / tf.cast(self.warmup_steps, step.dtype), 1.0)
        z = tf.where(tf.equal(step, 1), param, slots["momentum"])  # z starts at the variable's value
        v = slots["velocity"] + (tf.square(grad) - slots["velocity"]) * (1 - beta_2)
        denominator = tf.sqrt(v / (1 - tf.pow(beta_2, step))) + epsilon
        new_z = z - (learning_rate * grad) / denominator
        weight = 1.0 / step
        x = self._recover_x(param, z, new_z, beta_1)
        new_x = (1 - weight) * x + weight * new_z
        new_y = (1 - beta_1) * new_z + beta_1 * new_x
        return param - new_y, {"momentum": new_z, "velocity": v}

    @staticmethod
    def _recover_x(y, z, new_z, beta_1):
        """``x = (y - (1 - b1) * z) / b1``, the average, from the training point and the step's old ``z``."""
        return (y - (1 - beta_1) * z) / beta_1

    # ---------------------------------------------------------- evaluation
    def evaluation_weights(self, variables) -> list[tf.Tensor]:
        """The evaluation point ``x = (y - (1 - b1) * z) / b1`` of each variable (its current value is ``y``)."""
        found = []
        for position, variable in enumerate(variables):
            variable = as_tf_variable(variable, position)
            try:
                slot = self.get_slot(variable, "momentum")
            except KeyError:  # never stepped: x = y = z
                found.append(tf.identity(variable))
                continue
            dtype = compute_dtype(variable.dtype)
            beta_1 = tf.cast(type(self).beta_1.value_at(self, tf.cast(self.iterations, tf.float64)), dtype)
            y = tf.cast(tf.convert_to_tensor(variable), dtype)
            z = tf.where(tf.equal(self.iterations, 0), y, tf.cast(tf.convert_to_tensor(slot), dtype))
            found.append(tf.cast(self._recover_x(y, z, z, beta_1), variable.dtype))
        return found

    def assign_evaluation_weights(self, variables) -> None:
        """Put the evaluation point into the variables for good (e.g. at the end of training)."""
        variables = list(variables)
        for position, (variable, x) in enumerate(zip(variables, self.evaluation_weights(variables))):
            as_tf_variable(variable, position).assign(x)

    @contextlib.contextmanager
    def evaluation_point(self, variables):
        """``with opt.evaluation_point(variables):`` the variables hold ``x`` inside the block; on exit they get
        their training values ``y`` back exactly."""
        variables = [as_tf_variable(v, i) for i, v in enumerate(variables)]
        saved = [tf.identity(v) for v in variables]
        self.assign_evaluation_weights(variables)
        try:
            yield
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)
