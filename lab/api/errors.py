"""API errors as the real server reports them: a `Status` object with reason and code."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server refuses; `status()` is the body the real server would send."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{plural} "{name}" not found',
                    {"name": name, "kind": plural})


def already_exists(plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists',
                    {"name": name, "kind": plural})


def conflict(plural: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": {why}',
                    {"name": name, "kind": plural})


def stale(plural: str, name: str) -> ApiError:
    return conflict(plural, name, "the object has been modified; please apply your changes "
                                  "to the latest version and try again")


def invalid(kind: str, name: str, field: str, value: Any, why: str) -> ApiError:
    cause = f"Invalid value: {value!r}: {why}" if value is not None else f"Required value: {why}"
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {cause}', {
        "name": name, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid" if value is not None else "FieldValueRequired",
                    "message": cause, "field": field}],
    })


def _go(value: Any) -> str:
    """A value as the real server quotes it in messages (Go's %#v, near enough)."""
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[]string{" + ", ".join(_go(v) for v in value) + "}"
    if value is True or value is False:
        return str(value).lower()
    return str(value)


# The causes' reasons and their message forms, as apimachinery's field.Error renders them.
_FIELD_ERRORS = {
    "FieldValueInvalid": "Invalid value: {value}: {why}",
    "FieldValueRequired": "Required value{why}",
    "FieldValueDuplicate": "Duplicate value: {value}",
    "FieldValueNotSupported": "Unsupported value: {value}: supported values: {why}",
    "FieldValueForbidden": "Forbidden: {why}",
    "FieldValueTooMany": "Too many: {value}: {why}",
    "FieldValueTooLong": "Too long: {why}",
    "FieldValueTypeInvalid": "Invalid value: {value}: {why}",
}


def field_invalid(kind: str, name: str, field: str, reason: str, value: Any = None,
                  why: str = "") -> ApiError:
    """422 Invalid with one cause of `reason` (a key of the field error forms above)."""
    if reason == "FieldValueRequired":
        why = f": {why}" if why else ""
    cause = _FIELD_ERRORS[reason].format(value=_go(value), why=why)
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {cause}', {
        "name": name, "kind": kind,
        "causes": [{"reason": reason, "message": cause, "field": field}],
    })


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(requested: int, oldest: int) -> ApiError:
    # The real server (1.19+) answers a too-old watch with reason Expired and code 410.
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def field_cause(field: str, reason: str, value: Any = None, why: str = "") -> dict[str, str]:
    """One cause of a 422, rendered as apimachinery's field.Error renders it."""
    if reason == "FieldValueRequired":
        why = f": {why}" if why else ""
    return {"reason": reason, "message": _FIELD_ERRORS[reason].format(value=_go(value), why=why),
            "field": field}


def invalid_causes(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid with every cause, as the real server reports a custom resource:
    `Kind.group "name" is invalid: [field: message, ...]` (no brackets for one cause)."""
    rendered = [f"{c['field']}: {c['message']}" for c in causes]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', {
        "name": name, "group": group, "kind": kind, "causes": causes})
