"""tfopt: write, run and compare gradient-based optimizers in TensorFlow.

``import tfopt`` is light: it imports no TensorFlow, so the ``tfopt`` command starts at once. The public names
(``tfopt.Adam``, ``tfopt.RULES``, ``tfopt.problems``, ...) load their module, and with it TensorFlow, on first use
(PEP 562); ``from tfopt import Adam`` and ``from tfopt import transforms`` work as usual.

The package: ``core/`` (the base class, hyperparameters, checks, clipping, chain and transforms), ``optimizers/``
(one file per rule or wrapper), ``kernels/`` (the native and fused ops), ``integrations/`` (Keras,
``tf.distribute``), ``lab/`` (problems, harness, results, bench, plotting); ``testing.py`` (the conformance kit)
and ``cli.py`` (the ``tfopt`` command) at the top.

``KerasOptimizer`` is still registered with Keras as soon as both are loaded, whichever comes first, so a
``.keras`` model compiled with ``opt.as_keras()`` loads after a plain ``import tfopt``: see ``_KerasHook``.
"""

import importlib
import sys

__version__ = "0.1.0"
__all__ = [
    "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ApplyIfFinite", "BatchResult", "Chain",
    "ConvergenceResult", "Ftrl", "GradientDescent", "Hyperparameter", "KerasOptimizer", "Lamb", "LazyAdam", "Lion",
    "Lookahead", "Momentum", "MovingAverage", "MultiSteps", "Muon", "Nadam", "Option", "Optimizer", "RMSprop",
    "RULES", "RectifiedAdam", "ScheduleFreeAdamW", "Yogi", "__version__", "chain", "checks", "convergence_test",
    "problems", "transforms",
]

_RULE_HOMES = {
    name: f"tfopt.optimizers.{module}" for name, module in {
        "GradientDescent": "gradient_descent", "Momentum": "momentum", "Adam": "adam", "RMSprop": "rmsprop",
        "Adagrad": "adagrad", "Adadelta": "adadelta", "Adamax": "adamax", "Nadam": "nadam", "AdamW": "adamw",
        "Lion": "lion", "Lamb": "lamb", "Ftrl": "ftrl", "Adafactor": "adafactor", "LazyAdam": "lazy_adam",
        "RectifiedAdam": "rectified_adam", "Yogi": "yogi", "Muon": "muon", "ScheduleFreeAdamW": "schedule_free_adamw",
    }.items()
}
"""The built-in rules (``tfopt.RULES``) -> their modules."""

_WRAPPER_HOMES = {
    name: f"tfopt.optimizers.{module}" for name, module in {
        "ApplyIfFinite": "apply_if_finite", "MultiSteps": "multi_steps", "Lookahead": "lookahead",
        "MovingAverage": "moving_average",
    }.items()
}
"""Wrappers around any tfopt optimizer (not in ``RULES``: each needs an inner optimizer)."""

_HOMES = {
    **_RULE_HOMES,
    **_WRAPPER_HOMES,
    "Optimizer": "tfopt.core.optimizer", "Hyperparameter": "tfopt.core.hyperparameters",
    "Option": "tfopt.core.hyperparameters", "Chain": "tfopt.core.combine", "chain": "tfopt.core.combine",
    "BatchResult": "tfopt.lab.harness", "ConvergenceResult": "tfopt.lab.harness",
    "convergence_test": "tfopt.lab.harness", "KerasOptimizer": "tfopt.integrations.keras_optimizer",
}
"""Public name -> the module defining it, imported on first access."""

_MODULES = {"checks": "tfopt.core.checks", "transforms": "tfopt.core.transforms", "problems": "tfopt.lab.problems"}
"""The public modules -> where they live."""


def __getattr__(name: str):
    if name == "RULES":
        # The tfopt optimizer classes by name (``as_keras`` and saved models look rules up here).
        value = {name: __getattr__(name) for name in _RULE_HOMES}
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:  # a subpackage or module: ``tfopt.testing``, ``tfopt.cli``, ``tfopt.kernels``, ...
        try:
            return importlib.import_module(f"{__name__}.{name}")  # (the import sets it as an attribute)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _KerasHook:
    """Import ``tfopt.integrations.keras_optimizer`` (registering ``KerasOptimizer``) once ``keras`` is imported.

    A ``sys.meta_path`` finder that watches the imports of ``keras``, ``tensorflow`` and tfopt's own modules:
    it lets the other finders find them and wraps their loader to count how deeply nested in such imports we
    are. Back at depth 0 with ``keras`` loaded, all of them are complete (``import tensorflow`` imports
    ``keras`` near its end, ``import keras`` imports ``tensorflow``, tfopt's modules import both, and
    ``tfopt.integrations.keras_optimizer`` needs them whole): the hook removes itself and imports that module. Until
    then it costs a name test per import.
    """

    depth = 0

    def find_spec(self, name, path=None, target=None):
        if name not in ("keras", "tensorflow") and not name.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _ChainedLoader(spec.loader, self)
                    return spec
        return None

    def loaded(self):
        if self.depth == 0 and "keras" in sys.modules:
            _register_with_keras()


class _ChainedLoader:
    """A watched module's own loader, counting the depth, then ``_KerasHook.loaded``."""

    def __init__(self, loader, hook):
        self.loader, self.hook = loader, hook

    def __getattr__(self, name):  # get_code (runpy), get_data, is_package, ...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps its own loader
        self.hook.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            self.hook.depth -= 1
        self.hook.loaded()


def _register_with_keras():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasHook)]
    try:
        importlib.import_module("tfopt.integrations.keras_optimizer")  # its decorator registers KerasOptimizer
    except Exception as error:  # noqa: BLE001  (never break the user's `import keras` for this)
        import warnings

        warnings.warn(f"tfopt: could not register KerasOptimizer with Keras ({error}); import "
                      "tfopt.integrations.keras_optimizer before loading a .keras model that uses it.", stacklevel=2)


if "keras" in sys.modules:
    _register_with_keras()
elif not any(type(f).__name__ == "_KerasHook" for f in sys.meta_path):  # (not twice, e.g. on reload)
    sys.meta_path.insert(0, _KerasHook())
