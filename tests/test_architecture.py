"""The layers of docs/architecture.md, checked on the source: every import points downward.

Read with ``ast`` (imports inside functions count too), so a lazy import cannot hide a wrong
dependency, and string constants naming ``training`` modules are refused in the library (a
module-name string is an import in disguise).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "intermimic_policy"

# Base utilities every layer may use (atomic writes, strict JSON, Ctrl-C handling, errors).
BASE = {"errors", "atomic", "jsonio", "interrupt"}
# package -> the project packages it may import (itself and BASE always allowed). Lowest layers first.
ALLOWED: dict[str, set[str]] = {
    "atomic": set(),
    "jsonio": set(),
    "interrupt": set(),
    "errors": set(),
    "geometry": {"errors"},
    "embodiment": {"errors", "geometry", "motion", "config_io"},  # smplx_shape fits skeletons to clips (lazily); robot YAML read strictly
    "motion": {"errors", "geometry", "embodiment"},
    "state": {"errors", "geometry", "embodiment"},
    "observation": {"errors", "geometry", "embodiment", "state"},
    "contract": {"errors", "embodiment", "observation", "__version__"},
    "runtime": {"errors", "contract", "observation"},
    "sim": {"errors", "geometry", "embodiment", "motion", "state", "observation", "contract", "runtime"},  # eval of ONNX
    "config_io": {"errors"},
    "retarget": {"geometry", "embodiment", "motion", "sim"},
    "stream": {"geometry", "motion", "ros"},
}


def _package(path: Path) -> str:
    rel = path.relative_to(LIBRARY)
    return rel.parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            if node.module == "intermimic_policy":
                out += [f"intermimic_policy.{a.name}" for a in node.names]
    return out


def _library_files() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_library_never_imports_training_not_even_by_name() -> None:
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text(), str(path))
        for name in _imports(tree):
            if name == "training" or name.startswith("training."):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value == "training" or node.value.startswith("training.")):
                offenders.append(f"{path.relative_to(ROOT)} names module {node.value!r}")
    assert offenders == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below(package: str) -> None:
    offenders = []
    for path in _library_files():
        if _package(path) != package or path.name == "commands.py" or path.name.endswith("_cli.py"):
            continue  # command modules are composition points (top layer), like cli.py
        for name in _imports(ast.parse(path.read_text(), str(path))):
            parts = name.split(".")
            if parts[0] != "intermimic_policy" or len(parts) < 2:
                continue
            target = parts[1]
            if target != package and target not in ALLOWED[package] | BASE:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_deployment_side_does_not_import_torch_at_module_level() -> None:
    """contract, runtime and config_io are numpy-only at import (the node's torch-free path)."""
    offenders = []
    for path in _library_files():
        rel = path.relative_to(LIBRARY)
        if rel.parts[0] not in ("contract.py", "runtime", "config_io.py") or path.name == "tensorrt_backend.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for name in _imports(ast.Module(body=top, type_ignores=[])):
            if name.split(".")[0] in ("torch", "mujoco"):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []
