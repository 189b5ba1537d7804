"""The codec stays below the archive: nothing in pacs_cae/codec imports dicom/, store/, archive/, net/ or cli/."""

from __future__ import annotations

import ast
from pathlib import Path

import pacs_cae.codec

CODEC = Path(pacs_cae.codec.__file__).parent
ABOVE = ("pacs_cae.dicom", "pacs_cae.store", "pacs_cae.archive", "pacs_cae.net", "pacs_cae.cli", "pacs_cae.train",
         "pacs_cae.evaluation", "pacs_cae.config")


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved against its package)."""
    package = "pacs_cae." + ".".join(path.relative_to(CODEC.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
    return names


def test_codec_imports_nothing_above_it() -> None:
    files = sorted(CODEC.rglob("*.py"))
    assert len(files) > 10
    offending = {f"{path.relative_to(CODEC)}: {name}" for path in files for name in _imports(path)
                 if name.startswith(ABOVE)}
    assert not offending, sorted(offending)


def test_the_check_sees_relative_imports() -> None:
    assert "pacs_cae.codec.normalize" in _imports(CODEC / "engine.py")
    assert "pacs_cae.codec.normalize" in _imports(CODEC / "rd" / "codec.py")
