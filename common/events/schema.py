"""Validate message JSON against its declaration (strict: no coercion, no undeclared key).

The declarations are TypedDicts, so producers in Python are type-checked by mypy; the same
declarations validate decoded text here through pydantic. Not for hot paths: consumers decode
with :mod:`orjson` and trust the producer; tests hold every producer to its declaration.
"""

from __future__ import annotations

import typing
from functools import cache
from types import UnionType
from typing import Any

from pydantic import TypeAdapter


@cache
def _adapter(declaration: Any) -> TypeAdapter[Any]:
    return TypeAdapter(declaration)


def validate(declaration: Any, text: str | bytes) -> Any:
    """The message ``text`` decoded, or pydantic's ValidationError naming every field of it
    that does not match ``declaration`` (a TypedDict, a union of them, a tuple type)."""
    return _adapter(declaration).validate_json(text, strict=True)


def members(declaration: Any) -> tuple[Any, ...]:
    """The alternatives of a union declaration; a single declaration alone."""
    if isinstance(declaration, UnionType) or typing.get_origin(declaration) is typing.Union:
        return typing.get_args(declaration)
    return (declaration,)


def which(declaration: Any, text: str | bytes) -> Any:
    """The one member of ``declaration`` that ``text`` matches; ValueError when it matches
    none (the errors of each) or more than one."""
    matched, errors = [], []
    for member in members(declaration):
        try:
            validate(member, text)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors.append(f"as {_name(member)}: {exc}")
        else:
            matched.append(member)
    if len(matched) == 1:
        return matched[0]
    if not matched:
        raise ValueError(f"message {_shown(text)} matches no declaration:\n" + "\n".join(errors))
    names = ", ".join(_name(m) for m in matched)
    raise ValueError(f"message {_shown(text)} matches more than one declaration: {names}")


def _name(declaration: Any) -> str:
    return getattr(declaration, "__name__", repr(declaration))


def _shown(text: str | bytes) -> str:
    value = text.decode() if isinstance(text, bytes) else text
    return value if len(value) <= 300 else value[:300] + "…"
