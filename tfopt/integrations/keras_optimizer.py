"""Run a tfopt update rule as a Keras optimizer, for ``model.compile`` and ``model.fit``.

Keras 3's ``model.compile`` accepts only ``keras.optimizers.Optimizer``
instances. ``tfopt.Adam(1e-3).as_keras()`` returns a ``KerasOptimizer`` whose
``update_step`` is tfopt's rule (the same ``update`` the ``tf.Module``
optimizer runs), while Keras owns everything around it: the learning rate
(a float or a ``LearningRateSchedule``; callbacks such as ``ReduceLROnPlateau``
change it), clipping, slots as Keras variables, ``.keras`` saving, loss
scaling under mixed precision, and ``tf.distribute``.

A step updates all the variables at once where it can: outside ``tf.distribute`` and XLA, the variables the
rule's native op takes (the built-ins' hand-written kernels, or the op the rule compiler derives from
``update``) are stepped by one op per dtype and device, as the tfopt optimizer's own ``apply_gradients`` steps
them, with the numbers of the tfopt optimizer's ``tf.function`` step bit for bit (and of ``update_step``, except
where grappler rewrites ``update_step``'s graph: Adagrad's last bits differ there); Keras's per-variable
``update_step`` runs for the rest (see ``KerasOptimizer._distributed_tf_update_step``). Keras 3 does not
compile ``model.fit``'s step with XLA on CPU-only machines, so there ``model.fit`` gets the native op.

Wrappers (``tfopt.Lookahead(tfopt.Adam(1e-3)).as_keras()``, and ``MovingAverage``, ``MultiSteps``,
``ApplyIfFinite``) are not per-variable rules: each decides per call what happens to all the variables (skip the
whole step, accumulate k calls, sync every k steps, average). ``KerasWrapper`` therefore runs the tfopt wrapper's
own ``apply_gradients`` in place of Keras's ``apply`` (as Keras's ``LossScaleOptimizer`` does with its inner
optimizer), on state Keras owns: see ``KerasWrapper``.

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
from tfopt.core.variables import as_tf_variable, variable_key


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
    """The built-in rules and wrappers by class name (``tfopt.RULES`` and the wrappers)."""
    import tfopt

    return {**tfopt.RULES, **{name: getattr(tfopt, name) for name in tfopt._WRAPPER_HOMES}}


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
    from tfopt.core.wrapper import Wrapper

    if not (isinstance(obj, type) and issubclass(obj, Optimizer)):
        kind = type(obj).__name__ if not isinstance(obj, type) else f"class {obj.__qualname__}"
        raise ValueError(f"{text!r} is not a tfopt.Optimizer subclass (it is a {kind}).")
    if obj in (Optimizer, Wrapper):
        raise ValueError(f"{text!r} is tfopt.{obj.__name__} itself, the base class; give a subclass with an "
                         "update rule.")
    return obj


def _check_kind(cls: type, wrapper: bool) -> type:
    """``cls`` if it is a wrapper (``wrapper=True``) or a plain rule (``False``), else ``ValueError`` saying which
    Keras class runs it."""
    from tfopt.core.wrapper import Wrapper

    if issubclass(cls, Wrapper) and not wrapper:
        raise ValueError(f"{cls.__qualname__} is a tfopt wrapper, not a per-variable rule: KerasWrapper runs it "
                         "(wrapper.as_keras() makes one).")
    if wrapper and not issubclass(cls, Wrapper):
        raise ValueError(f"{cls.__qualname__} is not a tfopt wrapper (tfopt.core.wrapper.Wrapper): "
                         "KerasOptimizer runs it (opt.as_keras() makes one).")
    return cls


def _resolve(rule, wrapper: bool) -> type:
    """The class a ``KerasOptimizer``/``KerasWrapper`` runs, from the class itself or its name."""
    cls = _check_rule(rule, getattr(rule, "__qualname__", repr(rule))) if isinstance(rule, type) \
        else import_rule(rule)
    return _check_kind(cls, wrapper)


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

    Outside ``tf.distribute`` and XLA a step updates the variables the rule's native op takes all at once (see
    ``_distributed_tf_update_step``); ``update_step`` runs for the others.
    """

    def __init__(self, rule="Adam", rule_config: dict | None = None, learning_rate=0.001, **kwargs):
        cls = _resolve(rule, wrapper=False)
        kwargs.setdefault("name", f"tfopt_{cls.__name__.lower()}")
        rule_config = dict(rule_config or {})
        # Keras's to apply: the rule's own _apply never runs here (a rule's default, e.g. AdamW's, counts too),
        # unless the rule decays each variable its own way (Muon): then the rule keeps it (_apply_weight_decay)
        if not _own_weight_decay(cls):
            weight_decay = rule_config.pop("weight_decay", None)
            if weight_decay is None:
                weight_decay = cls.from_config(dict(rule_config)).get_config().get("weight_decay")
            if weight_decay is not None and kwargs.get("weight_decay") is None:
                kwargs["weight_decay"] = weight_decay
        elif kwargs.get("weight_decay") is not None:
            raise ValueError(f"{cls.__name__} applies its own weight decay: give weight_decay in rule_config.")
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

    def _apply_weight_decay(self, variables):
        """Keras's weight decay, or the rule's own where it decays each variable its own way (Muon: another rate
        on its AdamW variables), on the variables Keras's ``exclude_from_weight_decay`` leaves."""
        rule = self._rule.value
        if not _own_weight_decay(type(rule)):
            return super()._apply_weight_decay(variables)
        targets = [as_tf_variable(v, i) for i, v in enumerate(variables) if self._use_weight_decay(v)]
        inputs = self._step_inputs(self.learning_rate)
        if tf.distribute.has_strategy():
            tf.__internal__.distribute.interim.maybe_merge_call(
                lambda strategy, targets: rule._apply_weight_decay(strategy, targets, inputs),
                self._distribution_strategy, targets)
        else:
            rule._apply_weight_decay(None, targets, inputs)

    _native = True
    """Whether a step outside ``tf.distribute`` updates the variables the native ops take all at once (see
    ``_distributed_tf_update_step``); ``False`` gives Keras's per-variable ``update_step`` for every variable (the
    same numbers but where grappler rewrites that graph, e.g. Adagrad's last bits; slower: the tests compare the
    two)."""

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """The step of all the variables (after Keras's clipping and weight decay, inside its gradient accumulation
        and before its EMA), once the rule's values from every gradient (a chain's global norm) are known.

        Outside ``tf.distribute`` (Keras's default strategy), the variables a native op takes are updated as the
        tfopt optimizer's own step updates them (``Optimizer._apply_native``): one op per dtype and device, the
        built-in's hand-written kernel or the compiled rule (``tfopt.kernels.compiler``), with the numbers of the
        tfopt optimizer's step (see the module docstring). Keras's per-variable ``update_step`` runs for the rest:
        sparse gradients a rule does not densify, rules the compiler declines, variables the op does not take
        (float16 for the built-ins' hand-written kernels; compiled rules step it in float32), steps under XLA or
        a strategy."""
        inputs = self._step_inputs(learning_rate)
        # (under a strategy the all-reduced gradients are equal on every replica: the hook reads the first copy)
        grads = [distribution.experimental_local_results(g)[0] for g, _ in grads_and_vars]
        inputs.update(self._rule.value.gradient_values(grads, [v for _, v in grads_and_vars], **inputs))
        self._scalar_cache.value[None] = inputs  # (key None: the float64 inputs; dtypes: their casts)
        if self._native and not tf.distribute.has_strategy():
            grads_and_vars = self._apply_native(grads_and_vars, learning_rate)
            if not grads_and_vars:
                return None
        return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)

    def _apply_native(self, grads_and_vars: list, learning_rate) -> list:
        """Update, with the rule's native op(s), the variables it takes; return the ``(grad, variable)`` pairs of
        the others, as they came (``update_step`` runs for them)."""
        items = []
        for grad, variable in grads_and_vars:
            index = self._get_variable_index(variable)
            slots = {name: as_tf_variable(slot_list[index], index) for name, slot_list in self._slot_lists.items()}
            items.append((_dedupe(grad) if isinstance(grad, tf.IndexedSlices) else grad, variable, slots))
        rest = self._rule.value._apply_native(items, lambda dtype: self._scalars(learning_rate, dtype))
        if len(rest) == len(items):
            return list(grads_and_vars)
        left = {id(variable) for _, variable, _ in rest}
        return [(g, v) for g, v in grads_and_vars if id(v) in left]

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
        _warn_if_not_importable(self.rule_class, self.rule)
        return {**super().get_config(), "rule": self.rule, "rule_config": dict(self.rule_config)}


def _own_weight_decay(cls: type) -> bool:
    """Whether the rule ``cls`` applies weight decay its own way (overrides ``Optimizer._apply_weight_decay``)."""
    from tfopt.core.optimizer import Optimizer

    return getattr(cls, "_apply_weight_decay", None) is not Optimizer._apply_weight_decay


def _warn_if_not_importable(cls: type, path: str) -> None:
    """Saving names ``cls`` by ``path``: warn when another program could not import it."""
    if not importable(cls):
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        warnings.warn(
            f"tfopt: the rule {cls.__qualname__} is defined {where}, so a saved model names it {path!r}, which "
            f"another program cannot import; define it in an importable module, or load with "
            f"keras.models.load_model(..., custom_objects={{{cls.__name__!r}: {cls.__name__}}}).",
            UserWarning, stacklevel=3)


def _levels(wrapper) -> list:
    """``wrapper``, its inner optimizer, that one's inner optimizer (wrappers may nest), ..., the rule."""
    from tfopt.core.wrapper import Wrapper

    found = [wrapper]
    while isinstance(found[-1], Wrapper):
        found.append(found[-1].inner_optimizer)
    return found


def _innermost_config(config: dict) -> dict:
    """The rule's config inside a wrapper's (nested) ``get_config()``."""
    while "optimizer" in config:
        config = config["optimizer"]["config"]
    return config


_NOT_FOR_WRAPPERS = ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay", "use_ema",
                     "gradient_accumulation_steps")
"""Keras options a ``KerasWrapper`` refuses: the tfopt optimizers apply their own clipping and weight decay
(they are in ``rule_config``), and Keras's EMA and accumulation would run outside the wrapper."""


@keras.saving.register_keras_serializable(package="tfopt")
class KerasWrapper(keras.optimizers.Optimizer):
    """A Keras optimizer running a tfopt wrapper (``Lookahead``, ``MovingAverage``, ``MultiSteps``,
    ``ApplyIfFinite``, or a user's ``tfopt.core.wrapper.Wrapper`` subclass) around a tfopt rule.

    A wrapper is not a per-variable rule (it skips, accumulates, syncs or averages all the variables of a call),
    so instead of Keras's ``update_step`` this class replaces Keras's ``apply`` (as ``LossScaleOptimizer`` does)
    with the tfopt wrapper's own ``apply_gradients``: the same code, hence the same numbers, as the wrapper in a
    custom loop. Keras owns the state: ``build`` creates, as Keras variables of this optimizer (saved in
    ``.keras`` files and Keras checkpoints), every slot of every level (the wrapper's ``slow``, ``average`` or
    ``accumulator``, the inner rule's ``m``, ``v``, ...) and every counter (``iterations`` is Keras's
    ``iterations``; the inner step count of ``MultiSteps`` and ``skipped_steps`` of ``ApplyIfFinite`` are
    ``inner_iterations`` and ``skipped_steps``), and hands them to the tfopt objects, which never create their own.
    The learning rate is Keras's (a float or a ``LearningRateSchedule``; callbacks change it) and is read by the
    innermost rule. Clipping and weight decay are the inner rule's, in ``rule_config`` (Keras's own options for
    them, ``use_ema`` and ``gradient_accumulation_steps`` raise ``ValueError``); ``exclude_from_weight_decay``
    exclusions carry over from ``as_keras()`` but, as in Keras, are not saved.

    ``tfopt_optimizer`` is the tfopt wrapper that steps; its methods and counters read this optimizer's
    variables: ``keras_opt.swap_average_weights(model.trainable_variables)`` / ``with keras_opt.averaged(vars):``
    (``MovingAverage``: evaluate with the averages, then swap back), ``keras_opt.skipped_steps``
    (``ApplyIfFinite``) and ``keras_opt.gradient_steps`` (``MultiSteps``) are forwarded to it.

    Not supported: ``tf.distribute`` (``NotImplementedError``, as for the tfopt wrappers themselves).

    Args:
      rule: the wrapper class, or its name (``"Lookahead"``, or ``"package.module:ClassName"``).
      rule_config: the wrapper's ``get_config()`` (with its inner optimizer's), without the learning rate.
      learning_rate: a float or a Keras ``LearningRateSchedule``: the innermost rule's.
      **kwargs: Keras optimizer arguments (``name``, ``loss_scale_factor``).
    """

    _FORWARDED = frozenset({"swap_average_weights", "averaged", "assign_average_vars", "skipped_steps",
                            "gradient_steps"})

    def __init__(self, rule="Lookahead", rule_config: dict | None = None, learning_rate=0.001, **kwargs):
        cls = _resolve(rule, wrapper=True)
        for option in _NOT_FOR_WRAPPERS:
            if kwargs.get(option) not in (None, False):
                raise ValueError(f"KerasWrapper does not take {option}={kwargs[option]!r}: give clipping and "
                                 f"weight decay to the inner tfopt optimizer ({cls.__name__}(tfopt.Adam(..., "
                                 "clipnorm=1.0)).as_keras()); Keras's EMA and gradient accumulation are "
                                 "tfopt.MovingAverage and tfopt.MultiSteps.")
        kwargs.setdefault("name", f"tfopt_{cls.__name__.lower()}")
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.rule, self.rule_config, self.rule_class = rule_path(cls), dict(rule_config or {}), cls
        with tf.init_scope():
            wrapper = cls.from_config(dict(self.rule_config))
        self._wrapper = _Hidden(wrapper)
        rate = self._learning_rate
        _levels(wrapper)[-1].learning_rate = rate if callable(rate) and not isinstance(rate, keras.Variable) \
            else rate.value  # Keras's variable (callbacks assign it) or schedule

    @property
    def tfopt_optimizer(self):
        """The tfopt wrapper that runs each step, on this optimizer's variables."""
        return self._wrapper.value

    def __getattr__(self, name):
        if name in KerasWrapper._FORWARDED and "_wrapper" in self.__dict__:
            return getattr(self._wrapper.value, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build(self, variables):
        """Keras's build, then every tfopt level's slots and counters as this optimizer's Keras variables."""
        if self.built:
            return
        super().build(variables)
        levels = _levels(self._wrapper.value)
        self._adopt_counters(levels)
        targets = [as_tf_variable(v, i) for i, v in enumerate(variables)]
        for level in levels:
            for variable, target in zip(variables, targets):
                self._adopt_slots(level, variable, target)

    def _adopt_counters(self, levels: list) -> None:
        """``iterations`` of each level (Keras's own at the top; a new one below a wrapper that counts its own
        calls) and each wrapper's other int64 counters (``skipped_steps``)."""
        levels[0].iterations = self._iterations.value
        for outer, inner in zip(levels, levels[1:]):
            if outer.shares_iterations:
                inner.iterations = outer.iterations
            else:
                inner.iterations = self._counter("inner_iterations")
            for name, value in list(vars(outer).items()):
                if isinstance(value, tf.Variable) and value.dtype == tf.int64 and name != "iterations" \
                        and not name.startswith("_"):
                    setattr(outer, name, self._counter(name))

    def _counter(self, name: str) -> tf.Variable:
        """A new int64 Keras variable at 0 (a fresh wrapper's counters are 0), as a ``tf.Variable``."""
        return self.add_variable(shape=(), dtype="int64", initializer="zeros", name=name).value

    def _adopt_slots(self, level, variable, target: tf.Variable) -> None:
        """Create ``level``'s slots of ``variable`` as Keras variables and register them with ``level``, as its own
        ``_slots_of`` would have made them (same names, shapes and first values)."""
        from tfopt.core.wrapper import Wrapper

        is_wrapper = isinstance(level, Wrapper)
        slots = {}
        for name in (level.own_slot_names if is_wrapper else level.slot_names):
            shape = tf.TensorShape(variable.shape) if is_wrapper else slot_shape_of(level, name, variable.shape)
            with tf.init_scope():
                first = level._initial_slot(name, target) if is_wrapper else tf.zeros(shape, variable.dtype)
            if shape == tf.TensorShape(variable.shape):
                slot = self.add_variable_from_reference(variable, name=name, initializer=_Constant(first))
            else:
                slot = self.add_variable(shape=tuple(shape), dtype=variable.dtype, name=name)
            slots[name] = slot.value
        level._registry.positions[variable_key(target)] = len(level._slots)  # (build runs once per variable)
        level._slots.append(slots)
        level._registry.variables.append(target)

    def apply(self, grads, trainable_variables=None):
        """One call of the tfopt wrapper on the (unscaled) gradients; then Keras's variable constraints."""
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Call build(trainable_variables) first, or pass trainable_variables.")
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
                self.built = True
            self._check_variables_are_known(trainable_variables)
        grads = list(grads)
        if self.loss_scale_factor is not None:
            grads = [g if g is None else g / self.loss_scale_factor for g in grads]
        self._wrapper.value.apply_gradients(
            [(g, as_tf_variable(v, i)) for i, (g, v) in enumerate(zip(grads, trainable_variables))])
        for variable in trainable_variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
        return self._iterations

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError("KerasWrapper steps all variables at once in apply(); it has no update_step.")

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """The innermost tfopt rule's exclusions: it applies the weight decay (call it before the first step)."""
        self._wrapper.value.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def get_config(self):
        for level in _levels(self._wrapper.value):
            _warn_if_not_importable(type(level), rule_path(type(level)))
        return {**super().get_config(), "rule": self.rule, "rule_config": dict(self.rule_config)}


class _Constant:
    """A Keras initializer returning ``value`` (a slot's first value: zeros, or the variable's own)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        with tf.init_scope():
            return tf.cast(self.value, dtype or self.value.dtype)


def _wrapper_to_keras(wrapper) -> KerasWrapper:
    """``wrapper.as_keras()``: the same wrapper, inner rule and hyperparameters as a Keras optimizer."""
    config = wrapper.get_config()
    config.pop("name", None)
    rule_config = _innermost_config(config)
    learning_rate = rule_config.pop("learning_rate", 0.001)
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = _StepFunction(learning_rate) if callable(learning_rate) else float(learning_rate)
    keras_wrapper = KerasWrapper(type(wrapper), config, learning_rate=learning_rate)
    exclusions = getattr(_levels(wrapper)[-1], "_weight_decay_exclusions", None)
    if exclusions is not None:
        _levels(keras_wrapper.tfopt_optimizer)[-1]._weight_decay_exclusions = exclusions
    return keras_wrapper


def to_keras(optimizer) -> KerasOptimizer | KerasWrapper:
    """``optimizer.as_keras()``: the same rule and hyperparameters as a Keras optimizer (no state copied).

    ``weight_decay`` and ``exclude_from_weight_decay``'s exclusions carry over to Keras, which applies them
    (names as substrings: they are escaped for Keras's regular expression). A wrapper becomes a ``KerasWrapper``.
    """
    from tfopt.core.wrapper import Wrapper

    if isinstance(optimizer, Wrapper):
        return _wrapper_to_keras(optimizer)
    config = optimizer.get_config()
    moved = ("clipnorm", "clipvalue", "global_clipnorm") + (() if _own_weight_decay(type(optimizer)) else
                                                            ("weight_decay",))
    keras_kwargs = {k: config.pop(k) for k in moved if k in config}
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
