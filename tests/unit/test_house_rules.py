"""The house rules of DESIGN.md sections 1 and 5, enforced on every run.

Pure packages import no clocks, sockets, files, threads or global randomness and do no file I/O;
nothing in src/ uses pickle, marshal, shelve, eval or exec.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "stalwart"
PURE_PACKAGES = {
    "wire", "clocks", "crdt", "raft", "paxos", "detect", "replication", "kv", "sansio",
    "gossip", "register",
}  # fmt: skip
PURE_SUBPACKAGES = {("txn", "twopc")}  # pure state machines inside an I/O package
BANNED_IN_PURE = {
    "asyncio", "socket", "time", "random", "os", "threading", "selectors", "subprocess",
    "io", "pathlib", "shutil", "tempfile", "multiprocessing", "signal", "datetime",
}  # fmt: skip
BANNED_EVERYWHERE = {"pickle", "marshal", "shelve", "dill", "cloudpickle"}
BANNED_CALLS_EVERYWHERE = {"eval", "exec", "compile", "__import__"}
BANNED_CALLS_IN_PURE = {"open", "input", "print"}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            found.append((node.lineno, node.func.id))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "load"
            and isinstance(node.value, ast.Name)
            and node.value.id == "yaml"
        ):
            found.append((node.lineno, "yaml.load"))
    return found


def breaches(root: pathlib.Path) -> list[str]:
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parts = path.relative_to(root).parts
        pure = (len(parts) > 1 and parts[0] in PURE_PACKAGES) or tuple(parts[:2]) in PURE_SUBPACKAGES
        for line, name in _imports(tree):
            top = name.split(".")[0]
            if top in BANNED_EVERYWHERE:
                out.append(f"{path}:{line}: imports {name}")
            if pure and top in BANNED_IN_PURE:
                out.append(f"{path}:{line}: pure package imports {name}")
        for line, name in _calls(tree):
            if name in BANNED_CALLS_EVERYWHERE or name == "yaml.load":
                out.append(f"{path}:{line}: calls {name}()")
            if pure and name in BANNED_CALLS_IN_PURE:
                out.append(f"{path}:{line}: pure package calls {name}()")
    return out


def test_source_tree_keeps_the_house_rules() -> None:
    assert SRC.is_dir()
    assert breaches(SRC) == []


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("wire", "import socket\n", "pure package imports socket"),
        ("raft", "from time import monotonic\n", "pure package imports time"),
        ("crdt", "import random\n", "pure package imports random"),
        ("kv", "data = open('x').read()\n", "pure package calls open()"),
        ("storage", "import pickle\n", "imports pickle"),
        ("runtime", "eval('1')\n", "calls eval()"),
        ("check", "import yaml\nyaml.load('a')\n", "calls yaml.load()"),
        ("txn/twopc", "import asyncio\n", "pure package imports asyncio"),
    ],
)
def test_the_rule_checker_catches_each_breach(
    tmp_path: pathlib.Path, package: str, source: str, expected: str
) -> None:
    # A rule checker that never fires proves nothing: plant one breach of each kind.
    pkg = tmp_path / package
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text(source)
    found = breaches(tmp_path)
    assert any(expected in line for line in found), found


def test_impure_packages_may_use_io(tmp_path: pathlib.Path) -> None:
    pkg = tmp_path / "storage"
    pkg.mkdir()
    (pkg / "ok.py").write_text("import os\nimport time\n")
    assert breaches(tmp_path) == []
