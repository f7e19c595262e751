"""The "Use it in your code" recipes of README.md run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipes() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Use it in your code\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_three_recipes():
    assert len(_recipes()) == 3


@pytest.mark.parametrize("index", range(3))
def test_recipe_runs(index):
    exec(compile(_recipes()[index], f"README.md recipe {index + 1}", "exec"), {})  # noqa: S102
