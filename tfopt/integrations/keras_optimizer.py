"""Run a tfopt update rule as a Keras optimizer, for ``model.compile`` and ``model.fit``.

Keras 3's ``model.compile`` accepts only ``keras.optimizers.Optimizer``
instances. ``tfopt.Adam(1e-3).as_keras()`` returns a ``KerasOptimizer`` whose
``update_step`` is tfopt's rule (the same ``update`` the ``tf.Module``
optimizer runs), while Keras owns everything around it: the learning rate
(a float or a ``LearningRateSchedule``; callbacks such as ``ReduceLROnPlateau``
change it), clipping, slots as Keras variables, ``.keras`` saving, loss
scaling under mixed precision, and ``tf.distribute``.

Any ``tfopt.Optimizer`` subclass works. A saved model names its rule by import path,
``"package.module:ClassName"`` (the built-ins by their short names, ``"Adam"``), and loading
imports it again (``rule_path`` and ``import_rule``). A class defined in ``__main__`` or inside
a function has no such path: it trains, and saving it warns; load such a file with
``keras.models.load_model(path, custom_objects={"RMSprop": RMSprop})``.
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings

import keras
import tensorflow as tf

from tfopt.core.optimizer import _dedupe, compute_dtype, slot_shape_of
from tfopt.core.variables import as_tf_variable


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


def _builtins() -> dict:
    from tfopt import RULES

    return RULES


def rule_path(cls: type) -> str:
    """How a saved model names the rule ``cls``: a built-in's short name (``"Adam"``), else ``"module:QualName"``."""
    if _builtins().get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def importable(cls: type) -> bool:
    """Whether another program can import ``cls`` by its ``rule_path`` (not so in ``__main__`` or a function)."""
    return cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__


def _check_rule(obj, text: str) -> type:
    from tfopt.core.optimizer import Optimizer

    if not (isinstance(obj, type) and issubclass(obj, Optimizer)):
        kind = type(obj).__name__ if not isinstance(obj, type) else f"class {obj.__qualname__}"
        raise ValueError(f"{text!r} is not a tfopt.Optimizer subclass (it is a {kind}).")
    if obj is Optimizer:
        raise ValueError(f"{text!r} is tfopt.Optimizer itself, the base class; give a subclass with an update rule.")
    return obj


def import_rule(text: str) -> type:
    """The ``tfopt.Optimizer`` subclass named by ``text``: a built-in's name (``"Adam"``) or ``"module:QualName"``.

    Raises ``ValueError``, one line naming what is wrong, if the module does not import, has no
    such name, or the name is not a ``tfopt.Optimizer`` subclass. A path that cannot be imported
    (a class of ``__main__`` or of a function) is also looked up in Keras's custom objects
    (``load_model(..., custom_objects={"RMSprop": RMSprop})``), by path or by class name.
    """
    builtins = _builtins()
    if not isinstance(text, str):
        raise ValueError(f"rule must be a tfopt.Optimizer subclass or its name, not {text!r}.")
    if text in builtins:
        return builtins[text]
    module_name, colon, qualname = text.partition(":")
    if not colon or not module_name or not qualname:
        raise ValueError(f"Unknown tfopt rule {text!r}; valid rules are {sorted(builtins)} or an import path "
                         f"'package.module:ClassName' of a tfopt.Optimizer subclass.")
    custom = keras.saving.get_registered_object(text) or keras.saving.get_registered_object(qualname.split(".")[-1])
    if custom is not None:
        return _check_rule(custom, text)
    hint = "define the class at the top level of an importable module, or pass it to " \
           f"keras.models.load_model(..., custom_objects={{{qualname.split('.')[-1]!r}: the_class}})"
    if "<locals>" in qualname:
        raise ValueError(f"Cannot find tfopt rule {text!r}: it was defined inside a function; {hint}.")
    if module_name == "__main__" and not hasattr(sys.modules.get("__main__"), qualname.split(".")[0]):
        raise ValueError(f"Cannot find tfopt rule {text!r}: it was defined in another program's __main__; {hint}.")
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001  (whatever the user's module raises: one line)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"Cannot import tfopt rule {text!r}: {type(error).__name__}: {reason}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"Cannot import tfopt rule {text!r}: module {module_name!r} has no "
                             f"{qualname!r}{_rules_in(sys.modules[module_name])}.") from None
    return _check_rule(obj, text)


def _rules_in(module) -> str:
    """``"; its tfopt optimizers are A, B"``: the Optimizer subclasses a module defines, for an error message."""
    from tfopt.core.optimizer import Optimizer

    found = sorted(name for name, value in vars(module).items() if isinstance(value, type)
                   and issubclass(value, Optimizer) and value is not Optimizer and value.__module__ == module.__name__)
    return f"; it defines the tfopt optimizers {', '.join(found)}" if found else ""


@keras.saving.register_keras_serializable(package="tfopt")
class KerasOptimizer(keras.optimizers.Optimizer):
    """A Keras optimizer running the tfopt rule ``rule``.

    Args:
      rule: a ``tfopt.Optimizer`` subclass, or its name: a built-in's (``"Adam"``, ``"Momentum"``, ...)
        or an import path ``"package.module:ClassName"``.
      rule_config: the rule's ``get_config()`` without the learning rate, name and clipping (e.g.
        the betas); the rule is rebuilt with ``rule.from_config(rule_config)``.
      learning_rate: a float or a Keras ``LearningRateSchedule``.
      **kwargs: Keras optimizer arguments (``clipnorm``, ``weight_decay``, ``name``, ...). Keras applies
        ``weight_decay`` itself (``x - x * wd * lr`` before the rule's step, in the variable's dtype); a
        ``weight_decay`` in ``rule_config`` is moved to it.

    ``get_config()`` names the rule by ``rule_path``, so ``.keras`` files load in a program that
    can import it; for a rule defined in ``__main__`` or in a function, saving warns.
    """

    def __init__(self, rule="Adam", rule_config: dict | None = None, learning_rate=0.001, **kwargs):
        cls = _check_rule(rule, getattr(rule, "__qualname__", repr(rule))) if isinstance(rule, type) \
            else import_rule(rule)
        kwargs.setdefault("name", f"tfopt_{cls.__name__.lower()}")
        rule_config = dict(rule_config or {})
        # Keras's to apply: the rule's own _apply never runs here (a rule's default, e.g. AdamW's, counts too)
        weight_decay = rule_config.pop("weight_decay", None)
        if weight_decay is None:
            weight_decay = cls.from_config(dict(rule_config)).get_config().get("weight_decay")
        if weight_decay is not None and kwargs.get("weight_decay") is None:
            kwargs["weight_decay"] = weight_decay
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.rule, self.rule_config = rule_path(cls), dict(rule_config or {})
        self.rule_class = cls
        with tf.init_scope():
            self._rule = _Hidden(cls.from_config(dict(self.rule_config)))
        self._scalar_cache = _Hidden({})

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        rule = self._rule.value

        def slot(v, name):  # the variable's shape, or the rule's slot_shape (Adafactor's factored moments)
            shape = slot_shape_of(rule, name, v.shape)
            if shape == tf.TensorShape(v.shape):
                return self.add_variable_from_reference(v, name=name)
            return self.add_variable(shape=tuple(shape), dtype=v.dtype, name=name)

        self._slot_lists = {name: [slot(v, name) for v in variables] for name in rule.slot_names}

    def apply(self, grads, trainable_variables=None):
        self._scalar_cache = _Hidden({})  # per-step scalars, computed once per dtype in this step
        return super().apply(grads, trainable_variables)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """Keras's per-variable updates, after the rule's values from every gradient (a chain's global norm)."""
        inputs = self._step_inputs(learning_rate)
        # (under a strategy the all-reduced gradients are equal on every replica: the hook reads the first copy)
        grads = [distribution.experimental_local_results(g)[0] for g, _ in grads_and_vars]
        inputs.update(self._rule.value.gradient_values(grads, [v for _, v in grads_and_vars], **inputs))
        self._scalar_cache.value[None] = inputs  # (key None: the float64 inputs; dtypes: their casts)
        return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)

    def _step_inputs(self, learning_rate) -> dict:
        """This step's float64 scalars: the rule's own hyperparameters (as rule_config set them), Keras's
        learning rate, the step and the rule's ``step_values``."""
        rule = self._rule.value
        hyper = rule._hyperparameter_values(self.iterations + 1)
        hyper["learning_rate"] = tf.cast(learning_rate, tf.float64)
        return rule._step_inputs(hyper, tf.cast(self.iterations + 1, tf.float64))

    def _scalars(self, learning_rate, dtype):
        cache = self._scalar_cache.value
        if dtype not in cache:
            if None not in cache:
                cache[None] = self._step_inputs(learning_rate)
            cache[dtype] = {k: tf.cast(v, dtype) for k, v in cache[None].items()}
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
        if not importable(self.rule_class):
            where = "in __main__" if self.rule_class.__module__ == "__main__" else "inside a function"
            warnings.warn(
                f"tfopt: the rule {self.rule_class.__qualname__} is defined {where}, so a saved model names it "
                f"{self.rule!r}, which another program cannot import; define it in an importable module, or load "
                f"with keras.models.load_model(..., custom_objects={{{self.rule_class.__name__!r}: "
                f"{self.rule_class.__name__}}}).", UserWarning, stacklevel=2)
        return {**super().get_config(), "rule": self.rule, "rule_config": dict(self.rule_config)}


def to_keras(optimizer) -> KerasOptimizer:
    """``optimizer.as_keras()``: the same rule and hyperparameters as a Keras optimizer (no state copied).

    ``weight_decay`` and ``exclude_from_weight_decay``'s exclusions carry over to Keras, which applies them
    (names as substrings: they are escaped for Keras's regular expression).
    """
    config = optimizer.get_config()
    keras_kwargs = {k: config.pop(k) for k in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay")
                    if k in config}
    config.pop("name", None)
    learning_rate = config.pop("learning_rate", 0.001)
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = _StepFunction(learning_rate) if callable(learning_rate) else float(learning_rate)
    keras_optimizer = KerasOptimizer(type(optimizer), config, learning_rate=learning_rate, **keras_kwargs)
    exclusions = getattr(optimizer, "_weight_decay_exclusions", None)
    if exclusions is not None and (exclusions.variables or exclusions.names):
        keras_optimizer.exclude_from_weight_decay(var_list=list(exclusions.variables) or None,
                                                  var_names=[re.escape(n) for n in exclusions.names] or None)
    return keras_optimizer
