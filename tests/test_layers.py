"""The package's floors: every import inside ``pl_pruning`` (at module level, inside a function,
or for type checking only) points to a lower floor or stays in its own folder or module, so
no import runs back up and no two folders import each other. The order is written here and
drawn in docs/ARCHITECTURE.md ("## Floors"); a test keeps the two the same."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pl_pruning"

# Top floor first; names on one floor import none of each other.
FLOORS = [
    ["recipes"],
    ["cli"],
    ["callbacks"],
    ["reports", "module"],
    ["pruning"],
    ["scoring"],
    ["statistics"],
    ["structure"],
    ["checkpoint"],
    ["models", "data"],
    ["measure"],
    ["export"],
    ["validate", "files", "modes"],
    ["errors"],
]
# The front door (``pl_pruning/__init__.py``, ``__main__.py``) re-exports from every floor.
FRONT_DOOR = {"__init__", "__main__"}


def _unit(module: str) -> str:
    """The floor member a dotted ``pl_pruning.`` module name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str, str]]:
    """``(file, importing unit, imported unit)`` of every pl_pruning import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        source = _unit(".".join(rel.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = ([f"pl_pruning.{alias.name}" for alias in node.names] if node.module == "pl_pruning"
                         else [node.module])
            else:
                continue
            found += [(str(rel), source, _unit(n)) for n in names if n.split(".")[0] == "pl_pruning"]
    return found


def test_no_import_runs_up_or_sideways():
    floor = {name: i for i, names in enumerate(FLOORS) for name in names}
    wrong = [f"{file}: {source} -> {target}" for file, source, target in _imports()
             if source not in FRONT_DOOR and target != source and floor[target] <= floor[source]]
    assert not wrong, "imports against the floors (top floor first: " + " / ".join(map(", ".join, FLOORS)) + \
        "):\n" + "\n".join(wrong)


def test_every_folder_and_module_of_the_package_is_on_a_floor():
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                      if (p / "__init__.py").is_file()}
    assert units - FRONT_DOOR == {name for names in FLOORS for name in names}


def test_the_architecture_document_draws_the_floors_as_they_are():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    drawing = re.search(r"^## Floors\n.*?^```\n(.*?)^```", text, re.S | re.M).group(1)
    drawn = [re.findall(r"[a-z_]+", line.split("#")[0]) for line in drawing.splitlines()]
    assert [names for names in drawn if names] == FLOORS
