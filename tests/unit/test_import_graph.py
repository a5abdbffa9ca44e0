"""The packages' import graph, read statically (every import statement, also those
inside functions and under TYPE_CHECKING, since each is a dependency all the same):
no package cycles, policy/ imports nothing kernel-side, common/ stays below the rest.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Folder -> the package name Python imports it as (pyproject.toml's package-dir).
FOLDERS = {"agent": "agent", "cni": "cni", "policy": "policy", "lab": "lab",
           "podwire": "cli", "common": "common", "bpf": "bpf", "bench": "bench"}
# Libraries that reach the kernel: BPF, netlink, raw packets, syscalls, processes.
KERNEL_SIDE = {"bcc", "pyroute2", "scapy", "ctypes", "fcntl", "mmap", "socket", "subprocess"}

Edge = tuple[str, str]  # (package, package or library)


def _package_of(dotted: str) -> str | None:
    """podwire.agent.x -> agent; podwire.render -> cli (the CLI); other -> None."""
    parts = dotted.split(".")
    if parts[0] != "podwire":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "podwire":
        return FOLDERS[parts[1]]
    return "cli"


def _dotted(path: Path) -> str:
    """The module name Python imports a file as."""
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = ["podwire"] + ([] if folder == "podwire" else [folder]) + rest
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module a file imports, absolute, with its line."""
    here = _dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield module, node.lineno
            for alias in node.names:  # `from podwire.lab import netns` imports a module
                yield f"{module}.{alias.name}", node.lineno


def edges() -> dict[Edge, list[str]]:
    """(importing package, imported package or top-level library) -> where."""
    found: dict[Edge, list[str]] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for module, line in _imports(path):
                target = _package_of(module) or module.split(".")[0]
                where = f"{path.relative_to(REPO)}:{line}"
                if target != package and where not in found.get((package, target), []):
                    found.setdefault((package, target), []).append(where)
    return found


EDGES = edges()
GRAPH = {p: {t for (s, t) in EDGES if s == p and t in FOLDERS.values()}
         for p in FOLDERS.values()}


def _cycle_through(start: str) -> list[str] | None:
    """A shortest path start -> ... -> start in the package graph, if there is one."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(GRAPH[path[-1]]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def test_the_reader_sees_the_graph_as_python_does() -> None:
    # Guards the reader: relative imports, module imports via `from`, and the CLI.
    assert ("cli", "bench") in EDGES and ("cli", "policy") in EDGES
    assert ("policy", "yaml") in EDGES
    assert not any(t == "policy" for s, t in EDGES if s == "policy")


def test_no_package_cycles() -> None:
    cycles = {}
    for package in sorted(GRAPH):
        cycle = _cycle_through(package)
        if cycle and frozenset(cycle) not in cycles:
            cycles[frozenset(cycle)] = [
                f"{a} -> {b} ({', '.join(EDGES[(a, b)][:3])})"
                for a, b in itertools.pairwise(cycle)]
    assert not cycles, "package cycles:\n" + "\n".join(
        "  " + "; ".join(steps) for steps in cycles.values())


def test_policy_imports_nothing_kernel_side() -> None:
    # Pure NetworkPolicy semantics: no other podwire package (common/ holds setns), no
    # library that reaches the kernel.
    bad = {target: where for (source, target), where in EDGES.items()
           if source == "policy" and (target in FOLDERS.values() or target in KERNEL_SIDE)}
    assert not bad, bad


def test_common_imports_none_of_the_packages_above_it() -> None:
    bad = {target: where for (source, target), where in EDGES.items()
           if source == "common" and target in {"agent", "cni", "lab", "cli", "bench"}}
    assert not bad, bad
