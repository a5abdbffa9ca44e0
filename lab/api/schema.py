"""A CRD's structural schema (`openAPIV3Schema`) applied as the real server applies it.

On every write of a custom resource, apiextensions-apiserver prunes fields the schema does
not name (and nulls of fields not `nullable`), fills `default`s, then validates: types,
`required`, `enum`, bounds on numbers, lengths and counts, `x-kubernetes-list-type` set and
map uniqueness, and the CEL rules of `x-kubernetes-validations`. Every failure is a cause
naming its field path; the write is refused whole (422) when there is any.

`compile_schema` turns the CRD's dictionary into `SchemaNode`s once, when the CRD is
written, compiling each rule: a rule that does not compile refuses the CRD.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from podwire.lab.api.cel import CelError, Program, compile_rule
from podwire.lab.api.errors import field_cause

Cause = dict[str, str]
# Fields of every object that the schema does not govern (metadata is ObjectMeta's).
ROOT_FIELDS = ("apiVersion", "kind", "metadata")
_TYPE_NAMES = {"object": dict, "array": list, "string": str, "boolean": bool}


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry, compiled."""

    program: Program
    message: str
    field_path: str


@dataclass
class SchemaNode:
    """One schema node, as much of OpenAPI v3 as structural schemas allow."""

    type: str | None = None
    properties: dict[str, SchemaNode] = field(default_factory=dict)
    additional: SchemaNode | None = None  # additionalProperties as a schema
    items: SchemaNode | None = None
    required: tuple[str, ...] = ()
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    min_properties: int | None = None
    max_properties: int | None = None
    nullable: bool = False
    has_default: bool = False
    default: Any = None
    preserve_unknown: bool = False
    int_or_string: bool = False
    list_type: str | None = None
    list_map_keys: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    any_of: tuple[SchemaNode, ...] = ()
    one_of: tuple[SchemaNode, ...] = ()
    all_of: tuple[SchemaNode, ...] = ()
    not_: SchemaNode | None = None


class SchemaError(ValueError):
    """A schema the lab cannot serve: `causes` name each place in the CRD."""

    def __init__(self, causes: list[Cause]) -> None:
        super().__init__("; ".join(f"{c['field']}: {c['message']}" for c in causes))
        self.causes = causes


def compile_schema(raw: Any, where: str) -> SchemaNode:
    """The schema at `where` (a field path inside the CRD), compiled; SchemaError if bad."""
    causes: list[Cause] = []
    node = _compile(raw, where, causes)
    if causes:
        raise SchemaError(causes)
    return node


def _compile_rules(raw: Any, where: str, causes: list[Cause]) -> tuple[Rule, ...]:
    rules = []
    for i, entry in enumerate(raw or []):
        path = f"{where}.x-kubernetes-validations[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
            causes.append(field_cause(f"{path}.rule", "FieldValueRequired"))
            continue
        try:
            program = compile_rule(entry["rule"])
        except CelError as err:
            causes.append(field_cause(f"{path}.rule", "FieldValueInvalid", entry["rule"],
                                      f"compilation failed: ERROR: {err}"))
            continue
        message = entry.get("message") or f"failed rule: {entry['rule']}"
        rules.append(Rule(program, str(message), str(entry.get("fieldPath") or "")))
    return tuple(rules)


def _compile(raw: Any, where: str, causes: list[Cause]) -> SchemaNode:
    if not isinstance(raw, dict):
        causes.append(field_cause(where, "FieldValueInvalid", str(raw), "must be an object"))
        return SchemaNode()

    def sub(key: str) -> SchemaNode | None:
        return _compile(raw[key], f"{where}.{key}", causes) if isinstance(
            raw.get(key), dict) else None

    def subs(key: str) -> tuple[SchemaNode, ...]:
        return tuple(_compile(s, f"{where}.{key}[{i}]", causes)
                     for i, s in enumerate(raw.get(key) or []))

    kind = raw.get("type")
    if kind not in (None, "object", "array", "string", "integer", "number", "boolean"):
        causes.append(field_cause(f"{where}.type", "FieldValueNotSupported", kind,
                                  '"array", "boolean", "integer", "number", "object", "string"'))
    props = raw.get("properties") or {}
    return SchemaNode(
        type=kind,
        properties={k: _compile(v, f"{where}.properties[{k}]", causes) for k, v in props.items()},
        additional=sub("additionalProperties"), items=sub("items"),
        required=tuple(raw.get("required") or ()),
        enum=tuple(raw["enum"]) if isinstance(raw.get("enum"), list) else None,
        minimum=raw.get("minimum"), maximum=raw.get("maximum"),
        min_length=raw.get("minLength"), max_length=raw.get("maxLength"),
        min_items=raw.get("minItems"), max_items=raw.get("maxItems"),
        min_properties=raw.get("minProperties"), max_properties=raw.get("maxProperties"),
        nullable=bool(raw.get("nullable")), has_default="default" in raw,
        default=raw.get("default"),
        preserve_unknown=bool(raw.get("x-kubernetes-preserve-unknown-fields")),
        int_or_string=bool(raw.get("x-kubernetes-int-or-string")),
        list_type=raw.get("x-kubernetes-list-type"),
        list_map_keys=tuple(raw.get("x-kubernetes-list-map-keys") or ()),
        rules=_compile_rules(raw.get("x-kubernetes-validations"), where, causes),
        any_of=subs("anyOf"), one_of=subs("oneOf"), all_of=subs("allOf"), not_=sub("not"),
    )


# ---- pruning and defaulting ---------------------------------------------------------------

def prune(node: SchemaNode, value: Any, path: str, unknown: list[str]) -> Any:
    """`value` without the fields `node` does not name and without nulls it does not allow
    (their paths go to `unknown`), with defaults filled in. Returns the new value."""
    if isinstance(value, dict) and not node.preserve_unknown and (
            node.type == "object" or node.properties or node.additional):
        out = {}
        for key, child in value.items():
            schema = node.properties.get(key, node.additional)
            where = f"{path}.{key}" if path else key
            if schema is None:
                unknown.append(where)
                continue
            if child is None and not schema.nullable:
                continue
            out[key] = prune(schema, child, where, unknown)
        for key, schema in node.properties.items():
            if key not in out and schema.has_default:
                out[key] = prune(schema, copy.deepcopy(schema.default),
                                 f"{path}.{key}" if path else key, [])
        return out
    if isinstance(value, list) and node.items is not None:
        return [prune(node.items, item, f"{path}[{i}]", unknown) for i, item in enumerate(value)]
    return value


def prune_object(root: SchemaNode, obj: dict[str, Any]) -> list[str]:
    """Prune and default a whole custom resource in place (its apiVersion, kind and metadata
    are left as they are); returns the paths of the unknown fields dropped."""
    unknown: list[str] = []
    governed = {k: v for k, v in obj.items() if k not in ROOT_FIELDS}
    pruned = prune(root, governed, "", unknown)
    for key in list(obj):
        if key not in ROOT_FIELDS:
            del obj[key]
    obj.update(pruned)
    return unknown


# ---- validation ---------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    for name, kind in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return name
    return "null"


def _type_ok(node: SchemaNode, value: Any) -> bool:
    if node.int_or_string:
        return isinstance(value, int | str) and not isinstance(value, bool)
    if node.type is None:
        return True
    if value is None:
        return node.nullable
    actual = _type_name(value)
    return actual == node.type or (node.type == "number" and actual == "integer")


def _bounds(node: SchemaNode, value: Any, path: str) -> Iterator[Cause]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if node.minimum is not None and value < node.minimum:
            yield field_cause(path, "FieldValueInvalid", value, f"{path} in body should be "
                              f"greater than or equal to {node.minimum}")
        if node.maximum is not None and value > node.maximum:
            yield field_cause(path, "FieldValueInvalid", value, f"{path} in body should be "
                              f"less than or equal to {node.maximum}")
    yield from _sizes(node, value, path)


def _sizes(node: SchemaNode, value: Any, path: str) -> Iterator[Cause]:
    if isinstance(value, str):
        if node.min_length is not None and len(value) < node.min_length:
            yield field_cause(path, "FieldValueInvalid", value, f"{path} in body should be "
                              f"at least {node.min_length} chars long")
        if node.max_length is not None and len(value) > node.max_length:
            yield field_cause(path, "FieldValueTooLong", why=f"may not be more than "
                              f"{node.max_length} bytes")
    if isinstance(value, list):
        if node.min_items is not None and len(value) < node.min_items:
            yield field_cause(path, "FieldValueInvalid", len(value), f"{path} in body should "
                              f"have at least {node.min_items} items")
        if node.max_items is not None and len(value) > node.max_items:
            yield field_cause(path, "FieldValueTooMany", len(value),
                              f"must have at most {node.max_items} items")
    if isinstance(value, dict):
        if node.min_properties is not None and len(value) < node.min_properties:
            yield field_cause(path, "FieldValueInvalid", len(value), f"{path} in body should "
                              f"have at least {node.min_properties} properties")
        if node.max_properties is not None and len(value) > node.max_properties:
            yield field_cause(path, "FieldValueTooMany", len(value),
                              f"must have at most {node.max_properties} items")


def _unique(node: SchemaNode, value: list[Any], path: str) -> Iterator[Cause]:
    if node.list_type not in ("set", "map"):
        return
    seen: list[Any] = []
    for i, item in enumerate(value):
        key = item if node.list_type == "set" else (
            tuple(item.get(k) for k in node.list_map_keys) if isinstance(item, dict) else item)
        if key in seen:
            shown = key if node.list_type == "set" else dict(zip(node.list_map_keys, key,
                                                                 strict=True))
            yield field_cause(f"{path}[{i}]", "FieldValueDuplicate", shown)
        seen.append(key)


def _children(node: SchemaNode, value: Any, path: str) -> Iterator[Cause]:
    if isinstance(value, dict):
        for key in node.required:
            if key not in value:
                yield field_cause(f"{path}.{key}" if path else key, "FieldValueRequired")
        for key, child in value.items():
            schema = node.properties.get(key, node.additional)
            if schema is not None:
                yield from validate(schema, child, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and node.items is not None:
        for i, item in enumerate(value):
            yield from validate(node.items, item, f"{path}[{i}]")
        yield from _unique(node, value, path)


def _combinators(node: SchemaNode, value: Any, path: str) -> Iterator[Cause]:
    for sub in node.all_of:
        yield from validate(sub, value, path)
    if node.any_of and not any(not list(validate(s, value, path)) for s in node.any_of):
        yield field_cause(path, "FieldValueInvalid", _type_name(value),
                          "must validate at least one schema (anyOf)")
    if node.one_of and sum(not list(validate(s, value, path)) for s in node.one_of) != 1:
        yield field_cause(path, "FieldValueInvalid", _type_name(value),
                          "must validate one and only one schema (oneOf)")
    if node.not_ is not None and not list(validate(node.not_, value, path)):
        yield field_cause(path, "FieldValueInvalid", _type_name(value),
                          "must not validate the schema (not)")


def _rules(node: SchemaNode, value: Any, path: str) -> Iterator[Cause]:
    for rule in node.rules:
        where = path + rule.field_path if rule.field_path else path
        try:
            ok = rule.program.evaluate(value) is True
        except CelError as err:
            yield field_cause(where, "FieldValueInvalid", _type_name(value),
                              f"{rule.message} (evaluation error: {err})")
            continue
        if not ok:
            yield field_cause(where, "FieldValueInvalid", _type_name(value), rule.message)


def validate(node: SchemaNode, value: Any, path: str = "") -> Iterator[Cause]:
    """Every cause `value` fails `node` for; none when it is valid."""
    where = path or "<nil>"  # the root, as apimachinery prints an empty field path
    if not _type_ok(node, value):
        yield field_cause(where, "FieldValueTypeInvalid", _type_name(value),
                          f"{where} in body must be of type {node.type}: {_type_name(value)!r}"
                          .replace("'", '"'))
        return
    if node.enum is not None and value not in node.enum:
        yield field_cause(where, "FieldValueNotSupported", value,
                          ", ".join(f'"{v}"' for v in node.enum))
    structural = list(_bounds(node, value, where)) + list(_children(node, value, path))
    yield from structural
    yield from _combinators(node, value, path)
    if not structural:
        # As the real server, rules run on values the structural checks accepted.
        yield from _rules(node, value, where)
