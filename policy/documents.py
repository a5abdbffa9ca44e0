"""Reading files of API objects: multi-document YAML, JSON, or `kind: List` wrappers.

Every document is decoded even after one fails, and each problem is reported with the
0-based index of its document, so one run shows everything wrong in a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from .cluster import Cluster, Namespace, Pod
from .errors import PolicyError, PolicyErrors
from .model import NetworkPolicy

T = TypeVar("T")
# libyaml's loader when present: the same safe subset, an order of magnitude faster.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ClusterObject = Namespace | Pod | NetworkPolicy


def load_documents(text: str) -> list[object]:
    """The documents of `text`: JSON (one value) or YAML (any number, `---` separated).

    Empty YAML documents are dropped. Raises PolicyError for text that is neither.
    """
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError:
            pass  # YAML flow style also starts with a brace; let the YAML parser decide.
    try:
        return [doc for doc in yaml.load_all(text, Loader=_YAML_LOADER) if doc is not None]
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(problem, "problem", None) or str(problem)
        raise PolicyErrors([PolicyError("", f"not valid YAML or JSON{where}: {reason}")]) from None


def _items(documents: list[object]) -> list[tuple[int, str, object]]:
    """`(document index, path prefix, object)` with `kind: List` documents expanded."""
    out: list[tuple[int, str, object]] = []
    for index, document in enumerate(documents):
        if isinstance(document, Mapping) and document.get("kind") == "List":
            entries = document.get("items") or []
            if not isinstance(entries, list):
                out.append((index, "items", entries))
                continue
            out += [(index, f"items[{n}]", entry) for n, entry in enumerate(entries)]
        else:
            out.append((index, "", document))
    return out


def _decode_all(text: str, decode: Callable[[object], T]) -> list[T]:
    errors: list[PolicyError] = []
    results: list[T] = []
    for index, prefix, obj in _items(load_documents(text)):
        try:
            results.append(decode(obj))
        except PolicyErrors as problem:
            errors += [
                PolicyError(_join(prefix, error.path), error.message, index)
                for error in problem.errors
            ]
    if errors:
        raise PolicyErrors(errors)
    return results


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    return f"{prefix}.{path}" if path else prefix


def parse_policies(text: str, default_namespace: str = "default") -> list[NetworkPolicy]:
    """Every NetworkPolicy in `text`; any other kind is an error."""
    return _decode_all(text, lambda obj: NetworkPolicy.from_api(obj, default_namespace))


def parse_object(obj: object, default_namespace: str = "default") -> ClusterObject:
    """One API object of kind Namespace, Pod or NetworkPolicy."""
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    decoders: dict[str, Callable[[], ClusterObject]] = {
        "Namespace": lambda: Namespace.from_api(obj),
        "Pod": lambda: Pod.from_api(obj),
        "NetworkPolicy": lambda: NetworkPolicy.from_api(obj, default_namespace),
    }
    if not isinstance(obj, Mapping):
        raise PolicyErrors([PolicyError("", "must be an object")])
    if not isinstance(kind, str) or kind not in decoders:
        raise PolicyErrors(
            [PolicyError("kind", f"must be Namespace, Pod or NetworkPolicy, got {kind!r}")]
        )
    return decoders[kind]()


def parse_cluster(text: str, default_namespace: str = "default") -> Cluster:
    """A Cluster from a file mixing Namespaces, Pods and NetworkPolicies."""
    cluster = Cluster()
    for obj in _decode_all(text, lambda obj: parse_object(obj, default_namespace)):
        cluster.add_object(obj)
    return cluster


def load_cluster(*paths: Path | str, default_namespace: str = "default") -> Cluster:
    """A Cluster from several files; errors name the file as well."""
    cluster = Cluster()
    for path in paths:
        text = _read(Path(path))
        try:
            objects = _decode_all(text, lambda obj: parse_object(obj, default_namespace))
        except PolicyErrors as problem:
            raise PolicyErrors(
                [
                    PolicyError(e.path, f"{e.message} (in {path})", e.document)
                    for e in problem.errors
                ]
            ) from None
        for obj in objects:
            cluster.add_object(obj)
    return cluster


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise PolicyErrors([PolicyError("", f"cannot read {path}: {problem}")]) from None
