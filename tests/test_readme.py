"""The README's Python examples run as written, in a fresh process as a user would, so they cannot rot."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 3


def test_readme_examples_run_in_order(tmp_path):
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(python_blocks()))
    # examples/ too: "Write your own optimizer" imports its rule from the examples package, as a user's module
    path = os.pathsep.join(filter(None, [str(README.parent), str(README.parent / "examples"),
                                         os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"loss (\d+\.\d+) after (\d+) steps", done.stdout)
    assert match, done.stdout
    assert int(match.group(2)) == 20 * 8
    assert float(match.group(1)) < 0.3, "the README's model should learn its toy task"
    assert "saved rule: my_rules.rules:RMSprop" in done.stdout, "a saved model names a user's rule by import path"


def test_readme_bench_commands_parse():
    """The README's ``tfopt`` command lines are valid (parsing only: no TensorFlow, no run)."""
    import shlex

    from tfopt import cli

    text = README.read_text()
    commands = re.findall(r"^(tfopt (?:bench|run) [^\n#]*)", text, flags=re.M)
    assert any("my_rules.rules:RMSprop" in c for c in commands)
    for command in commands:
        argv = shlex.split(command)[1:]
        args = cli.build_parser().parse_args(argv)
        assert args.command == argv[0]
