"""The README's reliability table names a test for every case: each named test must exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _named_tests() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| case | behaviour | test |") :].split("\n\n", 1)[0]
    named = []
    for row in table.splitlines()[2:]:
        current = None
        for reference in re.findall(r"`([\w/.]*::\w+)`", row):
            path, name = reference.split("::")
            current = path or current
            named.append((current, name))
    return named


def test_every_test_the_reliability_table_names_exists():
    named = _named_tests()
    assert len(named) >= 20
    for path, name in named:
        tree = ast.parse((ROOT / "tests" / path).read_text(encoding="utf-8"))
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"README names tests/{path}::{name}, which does not exist"
