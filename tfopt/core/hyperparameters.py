"""Hyperparameters that can change between steps without retracing.

A number is stored in a float64 ``tf.Variable`` owned by the optimizer, so
``opt.learning_rate = 0.01`` is an ``assign`` that an already traced
``tf.function`` sees on its next call. A value may also be a ``tf.Variable``
(or Keras variable) the user owns, of any shape that broadcasts against the
variables (a learning rate per row, say), or a callable of the step such as
a ``keras.optimizers.schedules.LearningRateSchedule``. Values are cast to each
variable's compute dtype where they are used.
"""

from __future__ import annotations

import importlib
import inspect

import tensorflow as tf


def _is_variable(value) -> bool:
    return isinstance(value, tf.Variable) or isinstance(getattr(value, "value", None), tf.Variable)


REQUIRED = object()
"""The default of a declaration whose constructor keyword must be given."""


class _Declaration:
    """A class attribute that names itself and reads its value from the instance's ``_store`` dict."""

    _store: str

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        try:
            return getattr(optimizer, self._store)[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


class Hyperparameter(_Declaration):
    """A hyperparameter of an ``Optimizer`` subclass (or a transform), declared as a class attribute.

        rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)

    makes ``rho`` a constructor keyword (default 0.9), an attribute that may be set between
    steps (a number is assigned into a float64 variable: traced ``tf.function``s see it with no
    retrace), an entry of ``get_config()``, and an input of ``update(..., rho=...)`` as a tensor
    in the variable's compute dtype. ``check(name, value)`` (see ``tfopt.checks``) raises
    ``ValueError`` before a bad value is stored. ``schedulable`` also allows a callable of the
    step (a Keras ``LearningRateSchedule``), as the learning rate does.
    """

    def __init__(self, default=REQUIRED, check=None, *, schedulable: bool = False):
        self.default = default
        self.check = check or (lambda name, value: None)
        self.schedulable = schedulable

    _store = "_hyper"

    def __set__(self, optimizer, value) -> None:
        if _is_variable(value):
            self.check(self.name, value)
            self._replace(optimizer, value)
        elif callable(value):
            if not self.schedulable:
                raise TypeError(f"{self.name} must be a number or a variable, not a {type(value).__name__}.")
            self._replace(optimizer, value)
        else:
            self._set_number(optimizer, value)

    def _replace(self, optimizer, value) -> None:
        """Hold ``value`` itself (a variable or a schedule): only before the first step, which traced steps capture."""
        current = optimizer._hyper.get(self.name)
        if value is not current and getattr(optimizer, "_stepped", False):
            raise ValueError(f"{self.name} cannot become another variable or schedule after the first step: steps "
                             "already traced would keep the old one. Assign a number (opt.{0} = 0.01) or assign "
                             "into your variable (v.assign(0.01)) instead.".format(self.name))
        optimizer._hyper[self.name] = value

    def _set_number(self, optimizer, value) -> None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self.name} must be a number, a variable or a schedule, not {value!r}.") from None
        self.check(self.name, value)
        current = optimizer._hyper.get(self.name)
        if id(current) in optimizer._own_hyper_ids:
            current.assign(value)  # seen by traced tf.functions: no retrace
            return
        if current is not None and getattr(optimizer, "_stepped", False):
            raise ValueError(f"{self.name} is your {type(current).__name__}: after the first step, change it in place "
                             f"(assign into your variable) instead; steps already traced would keep reading it.")
        with tf.init_scope():
            variable = tf.Variable(value, dtype=tf.float64, trainable=False, name=self.name)
        optimizer._own_hyper_ids.add(id(variable))
        optimizer._hyper[self.name] = variable

    def value_at(self, optimizer, step: tf.Tensor) -> tf.Tensor:
        """The value for ``step`` (1-based) as a float64 tensor; schedules are checked to be >= 0."""
        value = optimizer._hyper[self.name]
        if callable(value) and not _is_variable(value):
            value = tf.cast(value(step - 1), tf.float64)  # Keras schedules count from 0
            tf.debugging.assert_greater_equal(
                value, tf.constant(0, tf.float64), message=f"{self.name} schedule returned a negative or NaN value"
            )
            return value
        return tf.cast(tf.convert_to_tensor(value), tf.float64)


class Option(_Declaration):
    """A constructor keyword that fixes the rule's structure: a bool, an int or a string.

        nesterov = tfopt.Option(False)

    Unlike a ``Hyperparameter`` it is a plain Python value, read by ``update`` as ``self.nesterov``,
    set once by the constructor (changing it later would need a retrace, so it cannot be changed),
    and saved by ``get_config()``. ``check(name, value)`` may reject a value.
    """

    def __init__(self, default=REQUIRED, check=None):
        self.default = default
        self.check = check

    _store = "_options"

    def __set__(self, optimizer, value) -> None:
        if self.name in optimizer._options:
            raise AttributeError(f"{self.name} is fixed at construction; make a new {type(optimizer).__name__}.")
        if self.check is not None:
            self.check(self.name, value)
        optimizer._options[self.name] = value


def declarations(cls, kind) -> dict:
    """The ``kind`` (``Hyperparameter`` or ``Option``) declarations of ``cls`` and its bases, base first."""
    found = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, kind):
                found[name] = value
    return found


def declared(cls, first: str | None = None) -> list:
    """The constructor's arguments of ``cls``, in order: ``first`` (``learning_rate``), the other
    hyperparameters, the options."""
    hyper = declarations(cls, Hyperparameter)
    head = [hyper.pop(first)] if first is not None else []
    return [*head, *hyper.values(), *declarations(cls, Option).values()]


def arguments(cls, declared: list, args: tuple, kwargs: dict, keywords: tuple[str, ...]) -> list[tuple]:
    """``(declaration, value)`` for each of ``declared``, from ``args``/``kwargs`` or its default.

    ``keywords`` are the constructor's own keyword options (named in the error message). Raises
    ``TypeError`` as Python does for an unknown keyword, too many positional arguments, an argument
    given twice or a required one missing.
    """
    names = [d.name for d in declared]
    if len(args) > len(declared):
        raise TypeError(f"{cls.__name__}() takes at most {len(declared)} positional arguments "
                        f"({', '.join(names)}) but {len(args)} were given")
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {unknown[0]!r}; "
                        f"its arguments are {', '.join([*names, *keywords])}")
    values = dict(zip(names, args))
    twice = sorted(set(values) & set(kwargs))
    if twice:
        raise TypeError(f"{cls.__name__}() got multiple values for argument {twice[0]!r}")
    values.update(kwargs)
    missing = [d.name for d in declared if d.name not in values and d.default is REQUIRED]
    if missing:
        raise TypeError(f"{cls.__name__}() missing required argument {missing[0]!r}")
    return [(d, values.get(d.name, d.default)) for d in declared]


def signature(declared: list, keywords: tuple[str, ...]) -> inspect.Signature:
    """What ``help(cls)`` and IDEs show: the declared arguments, then ``keywords`` (keyword-only, default None)."""
    parameters, kind = [], inspect.Parameter.POSITIONAL_OR_KEYWORD
    for d in declared:
        if d.default is REQUIRED and parameters:  # a required one after defaults: keyword-only from here on
            kind = inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(d.name, kind, default=inspect.Parameter.empty if d.default is REQUIRED
                                            else d.default))
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in keywords]
    return inspect.Signature(parameters)


def config_values(owner) -> dict:
    """``owner``'s hyperparameters (its own as numbers; user variables and schedules as they are), then options."""
    config = {name: float(value.numpy()) if id(value) in owner._own_hyper_ids else value
              for name, value in owner._hyper.items()}
    config.update(owner._options)
    return config


def class_path(cls: type) -> str:
    """``module:QualName``: how a config names a class (an inner optimizer, a chain's transform)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, base: type, what: str, base_name: str) -> type:
    """The subclass of ``base`` (public name ``base_name``) at ``module:QualName``; ``ValueError`` saying why not."""
    module_name, _, qualname = path.partition(":")
    try:
        found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"Cannot find the {what} {path!r} ({error}); its class must be importable as "
                         "module:QualName (defined at the top level of a module).") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{path!r} is not a {base_name} subclass.")
    return found
