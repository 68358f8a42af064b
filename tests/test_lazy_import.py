"""``import tfopt`` imports no TensorFlow; its names load on first use, and ``.keras`` models still load.

A model compiled with ``opt.as_keras()`` names ``tfopt>KerasOptimizer``, which Keras finds only once
``tfopt.integrations.keras_optimizer`` has run; ``import tfopt`` sees to that however Keras gets imported. That needs
fresh processes (this one imported everything long ago): one per import order.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfopt

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_resolve_on_first_use():
    assert set(tfopt.__all__) <= set(dir(tfopt))
    for name in tfopt.__all__:
        assert getattr(tfopt, name) is not None, name
    assert {"GradientDescent": tfopt.GradientDescent, "Momentum": tfopt.Momentum, "Adam": tfopt.Adam,
            "Lion": tfopt.Lion}.items() <= tfopt.RULES.items()
    assert all(issubclass(cls, tfopt.Optimizer) and cls.__name__ == name for name, cls in tfopt.RULES.items())
    assert issubclass(tfopt.Adam, tfopt.Optimizer) and tfopt.problems.names()
    assert tfopt.KerasOptimizer is keras.saving.get_registered_object("tfopt>KerasOptimizer")
    from tfopt import Adam, BatchResult, convergence_test  # noqa: F401
    from tfopt.lab.harness import ConvergenceResult

    assert ConvergenceResult is tfopt.ConvergenceResult
    assert tfopt.kernels.native.__name__ == "tfopt.kernels.native"  # submodules, as when __init__ imported them all
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        tfopt.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from tfopt import no_such_name  # noqa: F401


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny model compiled with ``tfopt.Adam().as_keras()``, trained one step and saved as ``.keras``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=tfopt.Adam(0.01).as_keras(), loss="mse")
    model.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), verbose=0)
    path = tmp_path_factory.mktemp("model") / "m.keras"
    model.save(path)
    return path, [w.numpy() for w in model.weights]


LOAD = """
import keras
model = keras.saving.load_model({path!r})
opt = model.optimizer
assert type(opt).__module__ == "tfopt.integrations.keras_optimizer", type(opt)
assert type(opt).__name__ == "KerasOptimizer", type(opt)
assert opt.rule == "Adam" and int(opt.iterations) == 1, (opt.rule, int(opt.iterations))
assert not [f for f in sys.meta_path if type(f).__name__ == "_KerasHook"], "the import hook should be gone"
np.save({out!r}, np.concatenate([w.numpy().ravel() for w in model.weights]))
print("LOADED")
"""

ORDERS = {
    "keras before tfopt": "import keras\nimport tfopt\n",
    "keras after tfopt": """
import tfopt
assert not {"tensorflow", "keras"} & {m.split(".")[0] for m in sys.modules}, "import tfopt imported TensorFlow"
import keras
""",
    # tfopt.adam imports TensorFlow, which imports Keras near its end: registered once all three are whole
    "keras through tfopt.Adam": "import tfopt\nfrom tfopt import Adam\nassert Adam.__name__ == 'Adam'\n",
}


@pytest.mark.parametrize("imports", ORDERS.values(), ids=ORDERS.keys())
def test_keras_model_loads_after_a_plain_import_tfopt(saved_model, tmp_path, imports):
    path, weights = saved_model
    out = tmp_path / "weights.npy"
    script = "import sys\nimport numpy as np\n" + imports + LOAD.format(path=str(path), out=str(out))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2", "TFOPT_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0 and "LOADED" in done.stdout, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out), np.concatenate([w.ravel() for w in weights]))
