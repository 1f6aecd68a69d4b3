"""The layers of ARCHITECTURE.md, enforced: no import runs back up, side-by-side packages never import each other,
every package sits in a layer, and no module imports another module's `_private` name.

The layer table is `[tool.importlinter]` in pyproject.toml (the one copy; `lint-imports` reads it too). The check
walks every `import` in the source, the ones inside functions included (tuneforge imports heavy modules lazily,
and a lazy import that runs back up is still a circle), so it needs nothing installed and runs in a second.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tuneforge"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def layer_table() -> list[list[str]]:
    """The layers, highest first, each a list of side-by-side top-level names ("train", "run", ...)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    return [[m.strip().removeprefix("tuneforge.") for m in layer.split("|")] for layer in contract["layers"]]


def top_level(module: str) -> str | None:
    """tuneforge.serve.app → serve; tuneforge.run → run; other packages → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tuneforge" and len(parts) > 1 else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import in the file, relative ones resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [a.name for a in node.names]
            out.append((node.lineno, base, names))
            # `from tuneforge import run` imports the module tuneforge.run
            out += [(node.lineno, f"{base}.{n}", []) for n in names if (PKG.parent / base.replace(".", "/") / n).with_suffix(".py").exists()
                    or (PKG.parent / base.replace(".", "/") / n / "__init__.py").exists()]
    return out


def layer_violations(table: list[list[str]] | None = None) -> list[str]:
    table = table or layer_table()
    rank = {name: i for i, layer in enumerate(table) for name in layer}
    found = []
    for path in sorted(PKG.rglob("*.py")):
        me = top_level(module_name(path))
        if me is None or me not in rank:
            continue
        for line, mod, _ in imports(path):
            other = top_level(mod)
            if other is None or other == me or other not in rank:
                continue
            where = f"{path.relative_to(ROOT)}:{line}: tuneforge.{me} imports {mod}"
            if rank[other] < rank[me]:
                found.append(f"{where} (layer {rank[other]} `{' | '.join(table[rank[other]])}` is above "
                             f"layer {rank[me]} `{' | '.join(table[rank[me]])}`)")
            elif rank[other] == rank[me]:
                found.append(f"{where} (side by side in layer {rank[me]}: neither may import the other)")
    return found


def test_no_import_runs_back_up_or_sideways():
    found = layer_violations()
    assert not found, "imports against ARCHITECTURE.md's layers:\n" + "\n".join(found)


def test_every_package_sits_in_a_layer():
    listed = {name for layer in layer_table() for name in layer}
    present = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert present - listed == set(), "add these to [tool.importlinter] layers and ARCHITECTURE.md"
    assert listed - present == set(), "listed in [tool.importlinter] but not in tuneforge/"


def test_a_back_up_import_is_caught(tmp_path):
    """The check itself can fail: a layer-0 module importing the top layer is reported with file and line."""
    probe = PKG / "errors.py"
    src = probe.read_text()
    lines = src.count("\n") + 1
    try:
        probe.write_text(src + "\n\ndef _probe():\n    from tuneforge.cli import app  # noqa: F401\n")
        found = layer_violations()
    finally:
        probe.write_text(src)
    assert any(f.startswith(f"tuneforge/errors.py:{lines + 3}: tuneforge.errors imports tuneforge.cli") for f in found), found


def private_imports() -> list[str]:
    """`from tuneforge.x import _name` and `alias._name` (alias bound to a tuneforge module) across modules."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        me = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tuneforge") \
                    and node.module != me:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {me} imports {node.module}.{a.name}")
                    full = f"{node.module}.{a.name}"
                    if (PKG.parent / full.replace(".", "/")).with_suffix(".py").exists():
                        aliases[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("tuneforge.") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != me:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {me} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_name():
    found = private_imports()
    assert not found, "make these public (or move them where they are used):\n" + "\n".join(found)
