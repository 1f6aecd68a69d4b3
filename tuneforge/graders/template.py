"""OpenAI's grader templates: `{{ sample.output_text }}`, `{{ item.answer }}`, `{{ item.a.b[0] }}`, `{{ item["key"] }}`.

Only the `item` (the dataset row) and `sample` (the model's output) namespaces exist. A value that is not a string
renders as JSON (numbers as written: 1.0 stays "1.0"); a missing variable is an `InvalidVariable` error, which a
grader scores 0 and counts as OpenAI's `invalid_variable_error`.
"""

from __future__ import annotations

import json
import re
from typing import Any

NAMESPACES = ("item", "sample")
_TAG = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"""\.\s*([A-Za-z_][A-Za-z0-9_\-]*)|\[\s*(-?\d+)\s*\]|\[\s*(?:"([^"]*)"|'([^']*)')\s*\]""")
_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InvalidVariable(ValueError):
    """A template names a namespace that does not exist or a key the item/sample lacks."""


def parse_path(expr: str) -> list[str | int]:
    """`item.a[0]["b"]` → ["item", "a", 0, "b"]; a ValueError names what is wrong."""
    m = _HEAD.match(expr)
    if not m:
        raise InvalidVariable(f"'{{{{{expr}}}}}': expected namespace.variable")
    out: list[str | int] = [m.group(0)]
    pos = m.end()
    while pos < len(expr):
        p = _PATH.match(expr, pos)
        if not p:
            raise InvalidVariable(f"'{{{{{expr}}}}}': cannot read the path from {expr[pos:]!r}")
        name, idx, dq, sq = p.groups()
        out.append(int(idx) if idx is not None else name if name is not None else dq if dq is not None else sq)
        pos = p.end()
    if out[0] not in NAMESPACES:
        raise InvalidVariable(f"'{{{{{expr}}}}}': unknown namespace '{out[0]}' (use item or sample)")
    if len(out) < 2:
        raise InvalidVariable(f"'{{{{{expr}}}}}': name a variable, e.g. {out[0]}.{'output_text' if out[0] == 'sample' else 'answer'}")
    return out


def check(text: str) -> None:
    """Static check of every tag in `text` (validation, before any data is seen)."""
    for m in _TAG.finditer(text):
        parse_path(m.group(1))


def lookup(expr: str, sample: dict, item: dict) -> Any:
    path = parse_path(expr)
    cur: Any = {"sample": sample, "item": item}[path[0]]
    for i, key in enumerate(path[1:], 1):
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            where = path[0] + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path[1:i + 1])
            raise InvalidVariable(f"'{{{{{expr}}}}}': {where} does not exist") from None
    return cur


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def render(text: str, sample: dict, item: dict) -> str:
    """Substitute every `{{ namespace.path }}` in `text`."""
    return _TAG.sub(lambda m: to_text(lookup(m.group(1), sample, item)), text)
