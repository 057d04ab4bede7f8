"""The README's Guarantees table names tests that exist: a promise never points at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def guarantees_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def test_every_test_the_guarantees_table_names_exists() -> None:
    rows = guarantees_rows()[1:]  # the header row names no test
    assert len(rows) >= 20
    for row in rows:
        proved_by = row.rstrip(" |").rsplit(" | ", 1)[-1]
        found = REFERENCE.findall(proved_by)
        assert found, f"no test named in: {row}"
        current: Path | None = None
        for path, name, continued in found:
            if path:
                current = ROOT / path
                assert current.is_file(), f"{path} does not exist"
            name = name or continued
            if name:
                assert current is not None
                tree = ast.parse(current.read_text())
                names = {
                    node.name
                    for node in tree.body
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                assert name in names, f"{current.relative_to(ROOT)}::{name} does not exist"
