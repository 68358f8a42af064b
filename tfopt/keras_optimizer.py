"""Run a tfopt update rule as a Keras optimizer, for ``model.compile`` and ``model.fit``.

Keras 3's ``model.compile`` accepts only ``keras.optimizers.Optimizer``
instances. ``tfopt.Adam(1e-3).as_keras()`` returns a ``KerasOptimizer`` whose
``update_step`` is tfopt's rule (the same ``_update`` the ``tf.Module``
optimizer runs), while Keras owns everything around it: the learning rate
(a float or a ``LearningRateSchedule``; callbacks such as ``ReduceLROnPlateau``
change it), clipping, slots as Keras variables, ``.keras`` saving, loss
scaling under mixed precision, and ``tf.distribute``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfopt.optimizer import _dedupe, compute_dtype
from tfopt.variables import as_tf_variable


class _Hidden:
    """Keeps an object out of Keras's and TensorFlow's variable tracking."""

    def __init__(self, value):
        self.value = value


class _StepFunction(keras.optimizers.schedules.LearningRateSchedule):
    """A plain callable of the step, as a Keras schedule (not serializable)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, step):
        return self.fn(step)


@keras.saving.register_keras_serializable(package="tfopt")
class KerasOptimizer(keras.optimizers.Optimizer):
    """A Keras optimizer running the tfopt rule ``rule`` (``"Adam"``, ``"Momentum"``, ...).

    Args:
      rule: the name of a tfopt optimizer class.
      rule_config: its hyperparameters other than the learning rate (e.g. betas).
      learning_rate: a float or a Keras ``LearningRateSchedule``.
      **kwargs: Keras optimizer arguments (``clipnorm``, ``name``, ...).
    """

    def __init__(self, rule: str = "Adam", rule_config: dict | None = None, learning_rate=0.001, **kwargs):
        from tfopt import RULES

        kwargs.setdefault("name", f"tfopt_{rule.lower()}")
        super().__init__(learning_rate=learning_rate, **kwargs)
        if rule not in RULES:
            raise ValueError(f"Unknown tfopt rule {rule!r}; valid rules are {sorted(RULES)}.")
        self.rule, self.rule_config = rule, dict(rule_config or {})
        with tf.init_scope():
            self._rule = _Hidden(RULES[rule](learning_rate=0.0, **self.rule_config))
        self._scalar_cache = _Hidden({})

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._slot_lists = {
            name: [self.add_variable_from_reference(v, name=name) for v in variables]
            for name in self._rule.value.slot_names
        }

    def apply(self, grads, trainable_variables=None):
        self._scalar_cache = _Hidden({})  # per-step scalars, computed once per dtype in this step
        return super().apply(grads, trainable_variables)

    def _scalars(self, learning_rate, dtype):
        cache = self._scalar_cache.value
        if dtype not in cache:
            rule = self._rule.value
            hyper = {name: tf.constant(value, tf.float64) for name, value in self.rule_config.items()
                     if name in rule._hyper}
            hyper["learning_rate"] = tf.cast(learning_rate, tf.float64)
            step = tf.cast(self.iterations + 1, tf.float64)
            cache[dtype] = {k: tf.cast(v, dtype) for k, v in rule._step_inputs(hyper, step).items()}
        return cache[dtype]

    def update_step(self, gradient, variable, learning_rate):
        rule = self._rule.value
        dtype = compute_dtype(variable.dtype)
        scalars = self._scalars(learning_rate, dtype)
        index = self._get_variable_index(variable)
        slots = {name: as_tf_variable(slot_list[index], index) for name, slot_list in self._slot_lists.items()}
        if isinstance(gradient, tf.IndexedSlices):
            gradient = _dedupe(gradient)
        rule._apply_one(gradient, as_tf_variable(variable, index), slots, scalars, dtype)

    def get_config(self):
        return {**super().get_config(), "rule": self.rule, "rule_config": dict(self.rule_config)}


def to_keras(optimizer) -> KerasOptimizer:
    """``optimizer.as_keras()``: the same rule and hyperparameters as a Keras optimizer (no state copied)."""
    config = optimizer.get_config()
    keras_kwargs = {k: config.pop(k) for k in ("clipnorm", "clipvalue", "global_clipnorm")}
    config.pop("name")
    learning_rate = config.pop("learning_rate")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = _StepFunction(learning_rate) if callable(learning_rate) else float(learning_rate)
    return KerasOptimizer(type(optimizer).__name__, config, learning_rate=learning_rate, **keras_kwargs)
