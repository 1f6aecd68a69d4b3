"""`calculate_output` of a multi grader: + - * / ^, parentheses, numbers, the sub-graders' names and min, max,
abs, floor, ceil, exp, sqrt, log (OpenAI's documented set). Parsed once into Python's AST and evaluated by walking
it: nothing outside that set is ever executed (no eval of the user's text)."""

from __future__ import annotations

import ast
import math
import operator
from typing import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
    "sqrt": math.sqrt, "log": math.log}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow}
_UN = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class FormulaError(ValueError):
    """The formula does not parse, uses something outside the allowed set, or names an unknown grader."""


def compile_formula(text: str, names: set[str]) -> ast.Expression:
    """Parse and check `text` (`^` is power, as in OpenAI's docs); raises FormulaError with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("calculate_output must be a non-empty formula")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise FormulaError(f"calculate_output {text!r} does not parse: {e.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, *_BIN, *_UN)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN or isinstance(node, ast.UnaryOp) and \
                type(node.op) in _UN:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and \
                not isinstance(node.value, bool):
            continue
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords or not node.args:
                fn = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise FormulaError(f"calculate_output: function {fn!r} is not allowed "
                                   f"(have: {', '.join(FUNCTIONS)})")
            continue
        if isinstance(node, ast.Name):
            if node.id not in names and node.id not in FUNCTIONS:
                raise FormulaError(f"calculate_output: unknown name {node.id!r} (graders: {', '.join(sorted(names))})")
            continue
        raise FormulaError(f"calculate_output: {ast.unparse(node)!r} is not allowed (numbers, grader names, "
                           "+ - * / ^, parentheses and min/max/abs/floor/ceil/exp/sqrt/log only)")
    return tree


def evaluate(tree: ast.Expression, values: dict[str, float]) -> float:
    """The formula's value; ArithmeticError/ValueError (division by zero, log of 0...) propagate."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(values[node.id])
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UN[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call):
            return float(FUNCTIONS[node.func.id](*[ev(a) for a in node.args]))
        raise FormulaError(f"unexpected {type(node).__name__}")  # compile_formula rules this out

    out = ev(tree)
    if isinstance(out, complex) or not math.isfinite(out):
        raise ValueError(f"the formula gave {out}")
    return float(out)
