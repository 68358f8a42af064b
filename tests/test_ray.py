"""Ray: a tiny training sweep on a local two-node Ray cluster over loopback equals the in-process run.

``ray.cluster_utils.Cluster`` starts a head node and a second node (each its own raylet and worker
processes, one CPU each) on this machine; ``tfopt.lab.parallel.run_trials(..., ray=address)`` connects to it as
``tfopt bench --ray ADDRESS`` does and spreads the trials over both nodes. Ray is in the ``dev`` extra, so
this test runs (it does not skip) wherever the tests do. ~40 s, most of it the nodes' workers importing
TensorFlow.
"""

import numpy as np
import pytest

from tfopt.lab import bench, parallel, train


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head node and a second node, one CPU each, on 127.0.0.1; shut down afterwards."""
    # Ray replaces 127.0.0.1 in addresses by this machine's network address unless told this is a one-machine
    # cluster; the variable (read when Ray is imported) keeps every node and the driver on loopback.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    if ray_constants.ENABLE_RAY_CLUSTER:  # Ray was imported before the variable was set
        monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    node = {"num_cpus": 1, "object_store_memory": 80 * 2**20, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:")
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_a_sweep_on_two_ray_nodes_equals_the_in_process_run(two_node_cluster):
    # A built-in and a user's rule by import path (tests/user_rules.py, found through the sys.path the tasks get).
    trials = train.make_trials(bench.make_optimizers(["Adam", "user_rules:RMSprop"]), [0.01],
                               ["linreg_diabetes", "embedding_sparse"], seeds=1, steps=20)
    on_ray = parallel.run_trials(trials, ray=two_node_cluster.address)
    here = parallel.run_trials(trials, workers=1)

    import ray

    assert not ray.is_initialized()  # run_trials connected, and disconnected when done
    nodes = {r.worker.split(" pid ")[0] for r in on_ray}
    assert len(nodes) == 2 and all(n.startswith("ray node ") for n in nodes), [r.worker for r in on_ray]
    for a, b in zip(on_ray, here):
        assert (a.workload, a.optimizer) == (b.workload, b.optimizer)
        assert a.numbers() == b.numbers(), (a.workload, a.optimizer)
        assert a.status == "ok" and np.isfinite(a.final_val_loss) and a.curve[-1][1] < a.curve[0][1]


def test_no_cluster_is_one_clear_error(monkeypatch):
    import ray

    def refuse(**_):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    trials = train.make_trials(bench.make_optimizers(["Adam"]), [0.01], ["linreg_diabetes"], seeds=1, steps=10)
    with pytest.raises(ConnectionError, match=r"no Ray cluster at 'auto' \(Could not find any running Ray instance\.\)"
                                              r"; start one with 'ray start --head'"):
        parallel.run_trials(trials, ray="auto")
