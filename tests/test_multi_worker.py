"""MultiWorkerMirroredStrategy: examples/multi_worker.py with two worker processes on loopback ports.

Two workers (TF_CONFIG, 127.0.0.1, free ports) and the script's single-process mode
run side by side as real processes; both workers must end with identical weights,
and with the single-process run's weights up to float32 summation order (the
all-reduce adds the two workers' gradient halves in a different order than one
process adding the whole batch).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "multi_worker.py"
TIMEOUT = 120.0  # seconds for all three processes together
STEPS = 12
RTOL, ATOL = 1e-5, 1e-6  # float32, 12 Adam steps: observed differences are ~1e-7


def free_ports(n):
    """``n`` distinct free TCP ports on 127.0.0.1 (bind to port 0, read the port, release)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def environment(tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def run_all(commands, tmp_path):
    """Start every ``(name, argv, env)`` at once and wait for all of them.

    Returns ``(exit codes, output tails)``. If one fails, or TIMEOUT passes, the others
    are killed (a worker whose peer died would wait for it forever).
    """
    procs, logs = {}, {}
    try:
        for name, argv, env in commands:
            logs[name] = open(tmp_path / f"{name}.log", "w+")
            procs[name] = subprocess.Popen([sys.executable, str(SCRIPT), *argv], env=env, cwd=tmp_path,
                                           stdout=logs[name], stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            codes = {name: proc.poll() for name, proc in procs.items()}
            if all(code is not None for code in codes.values()) or any(codes.values()):
                break
            time.sleep(0.2)
        codes = {name: proc.poll() for name, proc in procs.items()}
        for name, code in codes.items():
            if code is None:
                codes[name] = f"killed (still running after {time.monotonic() - deadline + TIMEOUT:.0f} s)"
        return codes, {name: (tmp_path / f"{name}.log").read_text()[-3000:] for name in procs}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


def test_two_workers_match_each_other_and_a_single_process_run(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    training = ["--steps", str(STEPS), "--global-batch", "32", "--optimizer", "adam", "--learning-rate", "0.01"]
    commands = [
        (f"worker{i}", ["--out", f"worker{i}.npz", *training],
         environment({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        for i in range(2)
    ]
    commands.append(("single", ["--single", "--out", "single.npz", *training], environment()))

    codes, logs = run_all(commands, tmp_path)
    for name, code in codes.items():
        assert code == 0, f"{name} exited with {code}; its output:\n{logs[name]}"

    w0, w1, single = (np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single"))
    keys = sorted((k for k in single.files if k.startswith("w")), key=lambda k: int(k[1:]))
    assert len(keys) == 4  # two Dense layers: kernel and bias each
    for result in (w0, w1, single):
        assert int(result["iterations"]) == STEPS
    for key in keys:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=f"workers disagree on {key}")
        np.testing.assert_allclose(w0[key], single[key], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{key}: two workers differ from the single-process run")
    # The workers saw the same global loss every step, equal to the single run's.
    np.testing.assert_array_equal(w0["losses"], w1["losses"])
    np.testing.assert_allclose(w0["losses"], single["losses"], rtol=RTOL)
    # Not vacuous: all three started from the same weights, and training moved them far beyond the tolerance.
    moved = 0.0
    for i, key in enumerate(keys):
        for result in (w0, w1):
            np.testing.assert_array_equal(result[f"init{i}"], single[f"init{i}"])
        moved = max(moved, float(np.max(np.abs(single[key] - single[f"init{i}"]))))
    assert moved > 1e-2
    assert single["losses"][-1] < single["losses"][0]
