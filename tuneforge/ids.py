"""Object ids in OpenAI's shape: `prefix-` + random letters and digits (`file-…`, `ftjob-…`, `chatcmpl-…`).

Never derived from user input, so an id is safe in a file name or a URL. Imports nothing from tuneforge.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    """`prefix-` + n random letters/digits (62**24 ≈ 1e43 values: collisions are not a concern)."""
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(n))
