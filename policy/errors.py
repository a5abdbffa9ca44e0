"""Errors raised for bad policy or cluster input, each naming the field that is wrong."""

from __future__ import annotations

from collections.abc import Sequence


class PolicyError(ValueError):
    """One problem in an API object: the field path and what is wrong with it.

    `path` reads like the Kubernetes API server's (`spec.ingress[0].from[1].ipBlock.cidr`);
    `document` is the 0-based index of the document in a multi-document file, or None
    when the object did not come from a file.
    """

    def __init__(self, path: str, message: str, document: int | None = None) -> None:
        self.path = path
        self.message = message
        self.document = document
        super().__init__(self.describe())

    def describe(self) -> str:
        """The error as one line: `document 2: spec.podSelector: message`."""
        where = f"{self.path}: " if self.path else ""
        prefix = f"document {self.document}: " if self.document is not None else ""
        return f"{prefix}{where}{self.message}"

    def in_document(self, document: int) -> PolicyError:
        """The same error, placed in document `document` of a file."""
        return PolicyError(self.path, self.message, document)


class PolicyErrors(PolicyError):
    """Every problem found in one input, so a user fixes them all in one pass.

    It is a PolicyError itself (path and message of the first problem), so callers that
    only want to know "is this input valid" catch PolicyError alone.
    """

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        if not errors:
            raise ValueError("PolicyErrors needs at least one error")
        self.errors: tuple[PolicyError, ...] = tuple(errors)
        first = self.errors[0]
        super().__init__(first.path, first.message, first.document)

    def describe(self) -> str:
        """All errors, one a line."""
        return "\n".join(error.describe() for error in self.errors)

    def in_document(self, document: int) -> PolicyErrors:
        """The same errors, placed in document `document` of a file."""
        return PolicyErrors([error.in_document(document) for error in self.errors])
