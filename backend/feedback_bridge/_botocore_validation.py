"""Validate operation inputs against botocore's own service model: the one source of truth for the adapters
(before sending) and the emulators (on receipt).

botocore itself checks only required members and minimum lengths before sending; enums, maximum lengths and
patterns reach the service unchecked. This checks them all, generically from the shapes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel, Shape

__all__ = ["Problem", "operation_model", "service_model", "validate"]


@dataclass(frozen=True)
class Problem:
    """One violated constraint: ``path`` names the member (``messageUsefulness.comment``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or 'input'}: {self.message}"


@functools.cache
def service_model(service: str) -> ServiceModel:
    return ServiceModel(Loader().load_service_model(service, "service-2"), service_name=service)


def operation_model(service: str, operation: str) -> OperationModel:
    return service_model(service).operation_model(operation)


def validate(shape: Shape, value: Any, path: str = "") -> list[Problem]:
    """Every constraint of ``shape`` that ``value`` breaks. Timestamps may be datetimes (boto3 parameters) or
    epoch seconds, whole or fractional (the rest-json wire)."""
    check = _CHECKS.get(shape.type_name)
    if check is None:
        return []
    return check(shape, value, path)


def _structure(shape: Shape, value: Any, path: str) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(path, "must be an object")]
    problems: list[Problem] = []
    present = {k: v for k, v in value.items() if v is not None}  # JSON null reads as absent
    for key in present.keys() - shape.members.keys():
        problems.append(Problem(_join(path, key), "is not a member of " + shape.name))
    for key in shape.required_members:
        if key not in present:
            problems.append(Problem(_join(path, key), "is required"))
    if shape.metadata.get("union") and len(present) != 1:
        problems.append(Problem(path, f"must set exactly one of {', '.join(shape.members)}"))
    for key, member in shape.members.items():
        if key in present:
            problems.extend(validate(member, present[key], _join(path, key)))
    return problems


def _list(shape: Shape, value: Any, path: str) -> list[Problem]:
    if not isinstance(value, list):
        return [Problem(path, "must be a list")]
    problems = _length(shape, len(value), path, "items")
    for i, item in enumerate(value):
        problems.extend(validate(shape.member, item, f"{path}[{i}]"))
    return problems


def _map(shape: Shape, value: Any, path: str) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(path, "must be an object")]
    problems = _length(shape, len(value), path, "entries")
    for key, item in value.items():
        problems.extend(validate(shape.key, key, f"{path}.{key}"))
        problems.extend(validate(shape.value, item, f"{path}.{key}"))
    return problems


def _string(shape: Shape, value: Any, path: str) -> list[Problem]:
    if not isinstance(value, str):
        return [Problem(path, "must be a string")]
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        return [Problem(path, f"must be one of {', '.join(enum)}")]
    problems = _length(shape, len(value), path, "characters")
    pattern = shape.metadata.get("pattern")
    if pattern is not None and not _matches(pattern, value):
        problems.append(Problem(path, f"must match the pattern ^{pattern}$"))
    return problems


def _number(kind: type | tuple[type, ...]) -> Callable[[Shape, Any, str], list[Problem]]:
    def check(shape: Shape, value: Any, path: str) -> list[Problem]:
        if isinstance(value, bool) or not isinstance(value, kind):
            return [Problem(path, "must be a number" if kind is not int else "must be an integer")]
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return [Problem(path, f"must be between {low} and {high}")]
        return []

    return check


def _boolean(shape: Shape, value: Any, path: str) -> list[Problem]:
    return [] if isinstance(value, bool) else [Problem(path, "must be true or false")]


def _timestamp(shape: Shape, value: Any, path: str) -> list[Problem]:
    if isinstance(value, datetime) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return []
    return [Problem(path, "must be a timestamp (epoch seconds)")]


def _blob(shape: Shape, value: Any, path: str) -> list[Problem]:
    return [] if isinstance(value, (str, bytes, bytearray)) else [Problem(path, "must be binary data")]


_CHECKS: dict[str, Callable[[Shape, Any, str], list[Problem]]] = {
    "structure": _structure, "list": _list, "map": _map, "string": _string, "boolean": _boolean,
    "integer": _number(int), "long": _number(int), "float": _number((int, float)), "double": _number((int, float)),
    "timestamp": _timestamp, "blob": _blob,
}


def _length(shape: Shape, length: int, path: str, unit: str) -> list[Problem]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and low == high and length != low:
        return [Problem(path, f"must have exactly {low} {unit}")]
    if low is not None and length < low:
        return [Problem(path, f"must have at least {low} {unit}")]
    if high is not None and length > high:
        return [Problem(path, f"must have at most {high} {unit}")]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# Model patterns are the documented ones with their outer ^...$ stripped; the service matches them whole.
# Python's re has no Unicode property classes, so the one form the models use, ``\P{C}*``, is checked
# with unicodedata instead.
_PROPERTY_RUN = re.compile(r"\\([pP])\{(\w+)\}\*")


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str) -> Callable[[str], bool]:
    run = _PROPERTY_RUN.fullmatch(pattern)
    if run:
        negate, category = run.group(1) == "P", run.group(2)
        return lambda value: all(unicodedata.category(ch).startswith(category) != negate for ch in value)
    try:
        compiled = re.compile(pattern)
    except re.error:  # a construct Python's re lacks: unchecked rather than wrongly refused
        return lambda value: True
    return lambda value: compiled.fullmatch(value) is not None


def _matches(pattern: str, value: str) -> bool:
    return _matcher(pattern)(value)
