"""The shared base of tfopt's wrappers: an optimizer that runs another one (``tfopt.Lookahead``, ...).

A ``Wrapper`` is a ``tfopt.Optimizer``: ``apply_gradients(zip(grads, vars))`` and
``apply_gradients(grads, vars)``, ``iterations`` (the inner optimizer's variable, except in ``MultiSteps``,
which counts calls), ``build`` (the inner optimizer's slots and the wrapper's), ``slot_names`` and ``get_slot``
(the wrapper's own slots, then the inner optimizer's), checkpoints (the inner optimizer is tracked as
``inner_optimizer``, so one ``tf.train.Checkpoint(optimizer=wrapper)`` holds both states),
``get_config``/``from_config`` (the inner optimizer as ``{"class": "module:QualName", "config": {...}}``) and
``tf.function``. The learning rate is the inner optimizer's (``wrapper.learning_rate = 0.1`` sets it).

``as_keras()`` gives a ``tfopt.integrations.keras_optimizer.KerasWrapper``, which runs this same
``apply_gradients`` on state Keras owns. Not supported yet: ``tf.distribute`` (``NotImplementedError`` naming the
wrapper).
A subclass declares its own hyperparameters and options as any rule does, its own ``own_slot_names`` (initial
values from ``_initial_slot``), and writes ``_apply(strategy, pairs)`` around ``self._inner_step(pairs)``.
"""

from __future__ import annotations

import inspect

import tensorflow as tf

from tfopt.core.hyperparameters import Hyperparameter, class_path, config_values, declared, import_class
from tfopt.core.optimizer import Optimizer, compute_dtype
from tfopt.core.validation import check_pairs, gradient_variable_pairs
from tfopt.core.variables import as_tf_variable, display_name, variable_key
from tfopt.integrations.distribution import slot_creation_scope

__all__ = ["Wrapper", "class_path", "import_optimizer"]

_INNER = object()
"""The base constructor's learning rate for a wrapper: keep the inner optimizer's."""


class _InnerLearningRate(Hyperparameter):
    """``Wrapper.learning_rate``: reads and writes the inner optimizer's learning rate."""

    def __init__(self):
        super().__init__(_INNER, schedulable=True)

    def __get__(self, wrapper, owner=None):
        if wrapper is None:
            return self
        try:
            inner = wrapper.__dict__["inner_optimizer"]
        except KeyError:
            raise AttributeError("learning_rate") from None
        return inner.learning_rate

    def __set__(self, wrapper, value) -> None:
        if value is _INNER:  # the base constructor's default
            return
        wrapper.inner_optimizer.learning_rate = value


class _InnerWeightDecay:
    """``wrapper.weight_decay``: the inner optimizer's (reading and setting it), which is the one applied."""

    def __get__(self, wrapper, owner=None):
        if wrapper is None:
            return self
        inner = wrapper.__dict__.get("inner_optimizer")
        return None if inner is None else inner.weight_decay

    def __set__(self, wrapper, value) -> None:
        inner = wrapper.__dict__.get("inner_optimizer")
        if inner is None:  # the base constructor's None, before the inner optimizer is there
            if value is not None:
                raise TypeError(f"{type(wrapper).__name__}() takes no weight_decay: give it to the inner optimizer.")
            return
        inner.weight_decay = value


def import_optimizer(path: str) -> type:
    """The ``tfopt.Optimizer`` subclass named ``module:QualName``; ``ValueError`` saying why not."""
    return import_class(path, Optimizer, "optimizer", "tfopt.Optimizer")


class Wrapper(Optimizer):
    """Base of the optimizers that wrap another ``tfopt.Optimizer`` (see the module docstring)."""

    learning_rate = _InnerLearningRate()
    weight_decay = _InnerWeightDecay()
    own_slot_names: tuple[str, ...] = ()
    """The wrapper's own slots; ``slot_names`` (per instance) are these and then the inner optimizer's."""

    shares_iterations = True
    """Whether ``iterations`` is the inner optimizer's variable (one step per applied call); else the wrapper
    has its own count."""

    def __init__(self, optimizer, *args, name=None, **kwargs):
        cls = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            hint = " (a class: call it)" if isinstance(optimizer, type) else ""
            raise TypeError(f"{cls} wraps a tfopt.Optimizer instance, not {optimizer!r}{hint}.")
        own = _own_arguments(type(self))
        if "learning_rate" in kwargs:
            raise TypeError(f"{cls}() takes no learning_rate: it is the inner optimizer's ({cls}.learning_rate "
                            "reads and sets it).")
        if len(args) > len(own):
            raise TypeError(f"{cls}() takes at most {len(own) + 1} positional arguments (optimizer, "
                            f"{', '.join(own)}) but {len(args) + 1} were given")
        for arg_name, value in zip(own, args):
            if arg_name in kwargs:
                raise TypeError(f"{cls}() got multiple values for argument {arg_name!r}")
            kwargs[arg_name] = value
        unknown = sorted(set(kwargs) - set(own))
        if unknown:
            raise TypeError(f"{cls}() got an unexpected keyword argument {unknown[0]!r}; its arguments are "
                            f"{', '.join(['optimizer', *own, 'name'])}")
        super().__init__(name=name or cls, **kwargs)
        self.inner_optimizer = optimizer
        inner_slots = tuple(optimizer.slot_names)
        clash = sorted(set(self.own_slot_names) & set(inner_slots))
        if clash:
            raise ValueError(f"{cls}'s slot {clash[0]!r} has the name of a slot of the inner "
                             f"{type(optimizer).__name__}; wrap an optimizer without a slot of that name.")
        self.slot_names = (*self.own_slot_names, *inner_slots)
        if self.shares_iterations:
            self.iterations = optimizer.iterations

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        """``name``, the wrapper's own hyperparameters and options, and ``optimizer``: the inner optimizer's
        class path and config."""
        inner = self.inner_optimizer
        return {"name": self.name, **config_values(self),
                "optimizer": {"class": class_path(type(inner)), "config": inner.get_config()}}

    @classmethod
    def from_config(cls, config: dict) -> Wrapper:
        """A new wrapper (and inner optimizer), without state, from ``get_config()``."""
        config = dict(config)
        entry = config.pop("optimizer")
        if not isinstance(entry, Optimizer):
            entry = import_optimizer(entry["class"]).from_config(dict(entry.get("config", {})))
        return cls(entry, **config)

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """The inner optimizer's weight decay exclusions (a wrapper has no weight decay of its own)."""
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    # ----------------------------------------------------------------- slots
    def build(self, variables) -> None:
        """Create the inner optimizer's slots and the wrapper's for ``variables`` now."""
        variables = list(variables)
        self.inner_optimizer.build(variables)
        super().build(variables)

    def _initial_slot(self, name: str, variable: tf.Variable) -> tf.Tensor:
        """The first value of the wrapper's slot ``name`` of ``variable`` (zeros unless a subclass says)."""
        return tf.zeros(variable.shape, variable.dtype)

    def _slots_of(self, variable: tf.Variable) -> dict:
        key = variable_key(variable)
        position = self._registry.positions.get(key)
        if position is None:
            with slot_creation_scope(variable):
                slots = {name: tf.Variable(self._initial_slot(name, variable), trainable=False,
                                           name=f"{name}_{len(self._slots)}") for name in self.own_slot_names}
            position = len(self._slots)
            self._slots.append(slots)
            self._registry.positions[key] = position
            self._registry.variables.append(variable)
        return self._slots[position]

    def get_slot(self, variable, name: str) -> tf.Variable:
        """The wrapper's slot ``name`` of ``variable``, else the inner optimizer's (``"m"`` of an inner Adam)."""
        if name in self.own_slot_names:
            position = self._registry.positions.get(variable_key(as_tf_variable(variable, 0)))
            if position is None:
                raise KeyError(f"Variable {display_name(variable)!r} has no slots yet: build or apply to it first.")
            return self._slots[position][name]
        if name not in self.inner_optimizer.slot_names:
            raise KeyError(f"{type(self).__name__} has no slot {name!r}; its slots are {list(self.own_slot_names)} and "
                           f"its inner {type(self.inner_optimizer).__name__}'s "
                           f"{list(self.inner_optimizer.slot_names)}.")
        return self.inner_optimizer.get_slot(variable, name)

    # ----------------------------------------------------------------- steps
    def apply_gradients(self, grads_and_vars, variables=None) -> tf.Variable:
        """One call: ``apply_gradients(zip(grads, vars))`` or ``apply_gradients(grads, vars)``; returns
        ``iterations``. Every argument is checked before anything changes."""
        pairs = check_pairs(gradient_variable_pairs(grads_and_vars, variables))
        if tf.distribute.has_strategy():
            raise NotImplementedError(f"tfopt.{type(self).__name__} does not support tf.distribute yet: step it "
                                      "outside any strategy (the inner optimizer alone does support one).")
        return self._apply(None, pairs)

    def _inner_step(self, pairs: list[tuple]) -> None:
        """One step of the inner optimizer (its clipping, weight decay and step count included)."""
        self.inner_optimizer._apply(None, pairs)

    def _hyper_value(self, name: str, dtype: tf.DType) -> tf.Tensor:
        """This call's value of the wrapper's hyperparameter ``name``, in ``dtype``."""
        return tf.cast(getattr(type(self), name).value_at(self, tf.cast(self.iterations + 1, tf.float64)), dtype)

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        raise NotImplementedError(f"{type(self).__name__} must define _apply(self, strategy, pairs).")


def wrapper_signature(cls) -> inspect.Signature:
    """What ``help(cls)`` shows: ``optimizer``, the wrapper's own arguments, ``name``."""
    parameters = [inspect.Parameter("optimizer", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    defaults = {d.name: d.default for d in declared(cls)}
    for name in _own_arguments(cls):
        parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name]))
    parameters.append(inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(parameters)


def _own_arguments(cls) -> list[str]:
    """The wrapper's own constructor arguments after ``optimizer``, in ``cls.argument_order`` if it gives one."""
    names = [d.name for d in declared(cls) if d.name != "learning_rate"]
    order = [name for name in getattr(cls, "argument_order", ()) if name in names]
    return order + [name for name in names if name not in order]


def compute(variable: tf.Variable) -> tf.DType:
    """The arithmetic dtype of ``variable`` (float32 for half precision)."""
    return compute_dtype(variable.dtype)


def read(variable: tf.Variable, dtype: tf.DType | None = None) -> tf.Tensor:
    """``variable``'s value, in ``dtype`` (its compute dtype by default)."""
    return tf.cast(tf.convert_to_tensor(variable), dtype or compute(variable))



def learning_rate_of(config: dict):
    """The learning rate in an optimizer's ``get_config()``: a wrapper's is its innermost optimizer's."""
    while "learning_rate" not in config and isinstance(config.get("optimizer"), dict):
        config = config["optimizer"]["config"]
    return config.get("learning_rate")


def with_learning_rate(config: dict, value) -> dict:
    """A copy of ``config`` (``get_config()``) with the learning rate set to ``value``, in a wrapper's innermost
    optimizer's config (the dicts on the way are copied, the rest shared)."""
    if "learning_rate" in config or not isinstance(config.get("optimizer"), dict):
        return {**config, "learning_rate": value}
    entry = config["optimizer"]
    return {**config, "optimizer": {**entry, "config": with_learning_rate(entry["config"], value)}}
