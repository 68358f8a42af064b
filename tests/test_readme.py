"""The README's Python examples run as written, so they cannot rot."""

import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 2


def test_readme_examples_run_in_order(capsys):
    namespace = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    match = re.search(r"loss (\d+\.\d+) after (\d+) steps", out)
    assert match, out
    assert int(match.group(2)) == 20 * 8
    assert float(match.group(1)) < 0.3, "the README's model should learn its toy task"
