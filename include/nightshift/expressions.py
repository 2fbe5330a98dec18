"""Derived features: a small, safe expression language over a model's declared features.

A spec may declare ``features[].expr``, e.g. ``log1p(total_charges) / (tenure_months + 1)`` or
``where(tenure_months < 12, 'new', 'established')``. The text is parsed once, when the spec loads,
into a tree of :class:`Node` objects built only from what this module allows; it is never ``eval``-ed.
Evaluation works on pandas columns, so the same code derives the columns in the training pipeline
(inside the logged model) and for the validation suites.

The language:

- numbers, strings in quotes, ``true``/``false``, and the names of other declared features (any name
  the spec allows works, SQL keywords like ``order`` or ``table`` included);
- ``+ - * / // % **``, unary ``-``, comparisons ``< <= > >= == !=``, ``and``, ``or``, ``not``;
- functions: ``log1p(x)``, ``sqrt(x)``, ``abs(x)``, ``clip(x, lo, hi)``, ``where(cond, a, b)``,
  ``coalesce(a, b, ...)`` (the first non-missing value) and ``isnull(x)``.

Missing values propagate as in pandas: arithmetic on a missing value is missing; a comparison with a
missing value is false.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

Kind = Literal["number", "text", "bool"]
FUNCTIONS: dict[str, tuple[int, int | None]] = {  # name -> (fewest, most) arguments
    "log1p": (1, 1),
    "sqrt": (1, 1),
    "abs": (1, 1),
    "clip": (3, 3),
    "where": (3, 3),
    "coalesce": (2, None),
    "isnull": (1, 1),
}
BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
# Words of the language itself; a feature with one of these names cannot be used in an expression.
RESERVED = {"and", "or", "not", "true", "false"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


class ExpressionError(ValueError):
    """An expression breaks a rule of the language; the message names what and where."""


@dataclass(frozen=True)
class Node:
    """One step of a parsed expression: ``op`` applied to ``args`` (a literal or a feature name for leaves)."""

    op: str  # "lit", "col", a BINARY/COMPARE symbol, "and", "or", "not", "neg", or a function name
    args: tuple[Any, ...]
    kind: Kind

    def columns(self) -> set[str]:
        """The feature names the expression reads."""
        if self.op == "col":
            return {self.args[0]}
        if self.op == "lit":
            return set()
        return set().union(*(a.columns() for a in self.args))


def _placeholders(text: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """``text`` with every feature name replaced by ``_c<i>`` (so that Python keywords parse as names)."""
    mapping: dict[str, str] = {}
    out, pos = [], 0
    for m in re.finditer(f"{_STRING.pattern}|{_NUMBER.pattern}|{_NAME.pattern}", text):
        token = m.group(0)
        out.append(text[pos : m.start()])
        pos = m.end()
        if token[0] in "'\"0123456789." or token in FUNCTIONS or token in RESERVED:
            out.append({"true": "True", "false": "False"}.get(token, token))
        elif token in names:
            alias = mapping.setdefault(token, f"_c{len(mapping)}")
            out.append(alias)
        else:
            raise ExpressionError(
                f"unknown name {token!r}; an expression may use the declared features and the functions "
                f"{', '.join(FUNCTIONS)}"
            )
    out.append(text[pos:])
    return "".join(out), {v: k for k, v in mapping.items()}


def parse(text: str, kinds: Mapping[str, Kind]) -> Node:
    """Parse ``text`` into a checked :class:`Node`.

    Args:
        text: The expression.
        kinds: The declared features it may read, and what each holds.

    Raises:
        ExpressionError: an unknown name or function, a wrong number of arguments, mixed kinds, or
            syntax the language does not have.
    """
    source, names = _placeholders(text, set(kinds) - RESERVED)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    return _node(tree.body, names, kinds)


def _node(n: ast.AST, names: dict[str, str], kinds: Mapping[str, Kind]) -> Node:
    if isinstance(n, ast.Constant) and isinstance(n.value, bool):
        return Node("lit", (n.value,), "bool")
    if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
        return Node("lit", (float(n.value),), "number")
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
        return Node("lit", (n.value,), "text")
    if isinstance(n, ast.Name) and n.id in names:
        name = names[n.id]
        return Node("col", (name,), kinds[name])
    if isinstance(n, ast.BinOp) and type(n.op) in BINARY:
        left, right = _node(n.left, names, kinds), _node(n.right, names, kinds)
        return Node(BINARY[type(n.op)], (_number(left), _number(right)), "number")
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        return Node("neg", (_number(_node(n.operand, names, kinds)),), "number")
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
        return Node("not", (_bool(_node(n.operand, names, kinds)),), "bool")
    if isinstance(n, ast.BoolOp):
        op = "and" if isinstance(n.op, ast.And) else "or"
        return Node(op, tuple(_bool(_node(v, names, kinds)) for v in n.values), "bool")
    if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in COMPARE:
        left, right = _node(n.left, names, kinds), _node(n.comparators[0], names, kinds)
        symbol = COMPARE[type(n.ops[0])]
        if left.kind != right.kind and {left.kind, right.kind} != {"number", "bool"}:
            raise ExpressionError(f"'{symbol}' compares a {left.kind} with a {right.kind}")
        return Node(symbol, (left, right), "bool")
    if isinstance(n, ast.Compare):
        raise ExpressionError("chained comparisons like a < b < c are not supported: use 'a < b and b < c'")
    if isinstance(n, ast.Call):
        return _call(n, names, kinds)
    raise ExpressionError(f"{type(n).__name__} is not part of the expression language")


def _call(n: ast.Call, names: dict[str, str], kinds: Mapping[str, Kind]) -> Node:
    if not isinstance(n.func, ast.Name) or n.func.id not in FUNCTIONS or n.keywords:
        name = n.func.id if isinstance(n.func, ast.Name) else ast.unparse(n.func)
        raise ExpressionError(f"unknown function {name!r}; allowed: {', '.join(FUNCTIONS)}")
    fn = n.func.id
    fewest, most = FUNCTIONS[fn]
    if len(n.args) < fewest or (most is not None and len(n.args) > most):
        wanted = str(fewest) if fewest == most else f"at least {fewest}"
        raise ExpressionError(f"{fn}() takes {wanted} argument(s), got {len(n.args)}")
    args = [_node(a, names, kinds) for a in n.args]
    if fn in ("log1p", "sqrt", "abs", "clip"):
        return Node(fn, tuple(_number(a) for a in args), "number")
    if fn == "isnull":
        return Node(fn, tuple(args), "bool")
    values = args[1:] if fn == "where" else args
    if fn == "where":
        _bool(args[0])
    kinds_seen = {a.kind for a in values}
    if len(kinds_seen) > 1 and kinds_seen != {"number", "bool"}:
        raise ExpressionError(f"{fn}() mixes {' and '.join(sorted(kinds_seen))} values")
    kind: Kind = "text" if "text" in kinds_seen else "number"
    return Node(fn, tuple(args), kind)


def _number(node: Node) -> Node:
    if node.kind == "text":
        raise ExpressionError("arithmetic on text: only numbers (and true/false) can be computed with")
    return node


def _bool(node: Node) -> Node:
    if node.kind != "bool":
        raise ExpressionError(f"a condition must be a comparison, isnull() or true/false, not a {node.kind}")
    return node


def evaluate(node: Node, frame: pd.DataFrame) -> Any:
    """The expression's values for the rows of ``frame`` (a Series, or a scalar for a literal)."""
    import numpy as np
    import pandas as pd

    a = node.args
    if node.op == "lit":
        return a[0]
    if node.op == "col":
        col = frame[a[0]]
        return col if node.kind == "text" else pd.to_numeric(col, errors="coerce").astype("float64")
    vals = [evaluate(x, frame) if isinstance(x, Node) else x for x in a]
    if node.op in OPERATIONS:
        return OPERATIONS[node.op](*vals)
    if node.op == "where":
        cond = _as_series(vals[0], frame).fillna(False).astype(bool)
        out = pd.Series(np.where(cond, _values(vals[1]), _values(vals[2])), index=frame.index)
        return out if node.kind == "text" else pd.to_numeric(out, errors="coerce").astype("float64")
    if node.op == "coalesce":
        series = [_as_series(v, frame) for v in vals]
        if node.kind == "number":
            series = [pd.to_numeric(s, errors="coerce").astype("float64") for s in series]
        out = series[0].to_numpy(dtype=object)
        for s in series[1:]:
            out = np.where(pd.isna(out), s.to_numpy(dtype=object), out)
        result = pd.Series(out, index=frame.index)
        return result if node.kind == "text" else result.astype("float64")
    if node.op == "isnull":
        return _as_series(vals[0], frame).isna()
    raise ExpressionError(f"cannot evaluate {node.op!r}")  # unreachable for parsed trees


def _as_series(value: Any, frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    return value if isinstance(value, pd.Series) else pd.Series([value] * len(frame), index=frame.index, dtype=object)


def _values(value: Any) -> Any:
    return value.to_numpy(dtype=object) if hasattr(value, "to_numpy") else value


def _clip(x: Any, lo: Any, hi: Any) -> Any:
    import numpy as np

    return np.clip(x, lo, hi)


def _np(name: str) -> Any:
    def fn(x: Any) -> Any:
        import numpy as np

        with np.errstate(invalid="ignore", divide="ignore"):
            return getattr(np, name)(x)

    return fn


def _div(x: Any, y: Any) -> Any:
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        out = x / y
    return out.replace([np.inf, -np.inf], np.nan) if hasattr(out, "replace") else out


OPERATIONS: dict[str, Any] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": _div,
    "//": lambda x, y: x // y,
    "%": lambda x, y: x % y,
    "**": lambda x, y: x**y,
    "neg": lambda x: -x,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "and": lambda *xs: _fold(xs, lambda p, q: p & q),
    "or": lambda *xs: _fold(xs, lambda p, q: p | q),
    "not": lambda x: (not x) if isinstance(x, bool) else ~x.astype(bool),
    "log1p": _np("log1p"),
    "sqrt": _np("sqrt"),
    "abs": _np("abs"),
    "clip": _clip,
}


def _fold(values: tuple[Any, ...], op: Any) -> Any:
    out = values[0]
    for v in values[1:]:
        out = op(out, v)
    return out
