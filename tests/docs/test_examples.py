"""The Python examples in README.md and docs/codec.md run as written (they are the public API's documentation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "codec.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_examples_run(doc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(doc)
    assert blocks, f"{doc.name} has no python example"
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {"__name__": "__doc_example__"})  # noqa: S102
    assert capsys.readouterr().out  # the examples print what they show
