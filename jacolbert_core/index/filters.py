"""Metadata filters (``where``) compiled to SQLite over JSON metadata.

Syntax (MongoDB-like, as in Chroma/LanceDB):
``{"lang": "ja"}``, ``{"year": {"$gte": 2020}}``, ``{"topic": {"$in": ["food", "travel"]}}``,
``{"$or": [{...}, {...}]}``, ``{"$and": [...]}``. Several keys in one dict are ANDed.
Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists.
"""

from __future__ import annotations

from typing import Any

COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
Scalar = (str, int, float, bool)


class FilterError(ValueError):
    """A ``where`` filter is malformed."""


def compile_where(where: dict[str, Any], column: str = "d.metadata") -> tuple[str, list[Any]]:
    """SQL boolean expression and its parameters for ``where``."""
    if not isinstance(where, dict) or not where:
        raise FilterError(f"where must be a non-empty dict like {{'lang': 'ja'}}, got {where!r}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{key} takes a non-empty list of filters, got {condition!r}")
            parts = [compile_where(sub, column) for sub in condition]
            joiner = " AND " if key == "$and" else " OR "
            clauses.append("(" + joiner.join(sql for sql, _ in parts) + ")")
            params.extend(p for _, sub_params in parts for p in sub_params)
        elif key.startswith("$"):
            raise FilterError(f"unknown logical operator {key!r}; use $and or $or")
        else:
            sql, field_params = _field(key, condition, column)
            clauses.append(sql)
            params.extend(field_params)
    return "(" + " AND ".join(clauses) + ")", params


def _field(key: str, condition: Any, column: str) -> tuple[str, list[Any]]:
    path = '$."' + key.replace('"', '\\"') + '"'
    value_sql = f"json_extract({column}, ?)"
    if not isinstance(condition, dict):
        condition = {"$eq": condition}
    clauses, params = [], []
    for op, value in condition.items():
        if op in COMPARISONS:
            _check_scalar(key, op, value)
            clauses.append(f"{value_sql} {COMPARISONS[op]} ?")
            params += [path, value]
        elif op in ("$in", "$nin"):
            if not isinstance(value, (list, tuple)) or not value:
                raise FilterError(f"{key}: {op} takes a non-empty list, got {value!r}")
            for item in value:
                _check_scalar(key, op, item)
            marks = ", ".join("?" * len(value))
            negate = "NOT " if op == "$nin" else ""
            clauses.append(f"{value_sql} {negate}IN ({marks})")
            params += [path, *value]
        elif op == "$exists":
            clauses.append(f"json_type({column}, ?) IS {'NOT ' if value else ''}NULL")
            params.append(path)
        else:
            raise FilterError(
                f"{key}: unknown operator {op!r}; use one of "
                f"{', '.join([*COMPARISONS, '$in', '$nin', '$exists'])}"
            )
    return "(" + " AND ".join(clauses) + ")", params


def _check_scalar(key: str, op: str, value: Any) -> None:
    if not isinstance(value, Scalar):
        raise FilterError(
            f"{key}: {op} compares with strings, numbers or booleans, got {type(value).__name__}"
        )
