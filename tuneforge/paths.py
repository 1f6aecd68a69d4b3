"""Where tuneforge keeps its own files: `$TUNEFORGE_HOME`, else `~/.cache/tuneforge`.

Converted base models (`models/`, `gguf/`, `wheels/`), distillation students (`students/`), remembered cost
estimates (`estimates/`) and the server's default database (`tuneforge.db`) all live under `home()`. Imports
nothing from tuneforge.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """$TUNEFORGE_HOME, read at each call (tests and users may set it after import)."""
    return Path(os.environ.get("TUNEFORGE_HOME", Path.home() / ".cache" / "tuneforge"))
