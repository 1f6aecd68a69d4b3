"""What the request log may keep: a redaction hook applied to every prompt, completion and feedback text.

`tuneforge serve --redact pii` (the default) replaces e-mail addresses and phone numbers with `[EMAIL]` and
`[PHONE]` before anything is stored; `--redact none` keeps text as sent; `--redact my_module:scrub` uses your
own function `scrub(text: str) -> str` (imported from the server's Python path), e.g. a Presidio pipeline.
The built-in patterns are a best-effort default, not a guarantee: names, addresses and IDs pass through.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

from tuneforge.errors import ConfigError

Redactor = Callable[[str], str]

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# digits in groups with separators, optionally +country code and (area code); 7–15 digits in all (E.164 allows 15)
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,4}(?![\w])"
                   r"|(?<![\w+])\+\d{7,15}(?!\w)")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone(m: re.Match) -> str:
    s = m.group(0)
    digits = sum(c.isdigit() for c in s)
    separators = sum(c in " .-()" for c in s)
    looks_like_phone = 7 <= digits <= 15 and (s.startswith("+") or "(" in s or separators >= 2)
    if not looks_like_phone or ISO_DATE.fullmatch(s.strip()):
        return s  # "12 and 34", "3.14", "2024-01-15" are not phone numbers
    return "[PHONE]"


def redact_pii(text: str) -> str:
    """E-mail addresses → [EMAIL], phone numbers → [PHONE]."""
    return PHONE.sub(_phone, EMAIL.sub("[EMAIL]", text))


def no_redaction(text: str) -> str:
    return text


def load_redactor(spec: str | None) -> Redactor:
    """`pii` (default), `none`, or `module:function` naming a str → str function."""
    if spec in (None, "", "pii"):
        return redact_pii
    if spec == "none":
        return no_redaction
    mod, sep, fn = spec.partition(":")
    if not sep or not mod or not fn:
        raise ConfigError(f"--redact {spec}: expected pii, none or module:function")
    try:
        func = getattr(importlib.import_module(mod), fn)
    except ImportError as e:
        raise ConfigError(f"--redact {spec}: cannot import {mod} ({e})") from None
    except AttributeError:
        raise ConfigError(f"--redact {spec}: {mod} has no function {fn}") from None
    if not callable(func):
        raise ConfigError(f"--redact {spec}: {fn} is not a function")
    try:
        out = func("probe text")
    except Exception as e:  # noqa: BLE001 - the user's function failing is their input problem, said once here
        raise ConfigError(f"--redact {spec}: calling it on a string failed: {type(e).__name__}: {e}") from None
    if not isinstance(out, str):
        raise ConfigError(f"--redact {spec}: must return a string, returned {type(out).__name__}")
    return func


def redact_content(obj, redact: Redactor):
    """Apply `redact` to every string inside a prompt as sent (a string, a list of messages with string or
    list-of-parts content, or token ids, which are left alone)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, list):
        return [redact_content(x, redact) for x in obj]
    if isinstance(obj, dict):
        return {k: (redact_content(v, redact) if k in ("content", "text") else v) for k, v in obj.items()}
    return obj
