"""The export manifest: `RUN/exports/<format>/manifest.json` says what an export is and whether it passed verify.

Written by every `tuneforge export ...` command; read by `export verify`, `generate`/`eval` (to find the model
file in an export directory) and `bench/export.py`. Fields: format, source run, tuneforge version, created,
files (relative path, bytes, sha256), settings (bits, type, ...), verify (the result of `export verify`).
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.run import file_sha256, read_json, write_json

NAME = "manifest.json"
FORMATS = ("merged", "int8", "int4", "onnx", "gguf-f16", "gguf-q8_0")


def default_dir(run_dir: str | Path, fmt: str) -> Path:
    """Where an export of `fmt` goes unless --output says otherwise."""
    return Path(run_dir) / "exports" / fmt


def file_entries(root: Path) -> list[dict]:
    """Every file of an export (the manifest itself left out) with its size and sha256."""
    return [{"path": str(f.relative_to(root)), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in sorted(root.rglob("*")) if f.is_file() and f.name != NAME]


def build(root: Path, fmt: str, run_dir: str | Path, settings: dict | None = None) -> dict:
    """The manifest of the export in `root` (verify filled in later by `record_verify`)."""
    import tuneforge

    return {"format": fmt, "source_run": str(Path(run_dir)), "tuneforge_version": tuneforge.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": settings or {},
            "files": file_entries(root), "verify": None}


def write(root: Path, manifest: dict) -> Path:
    return write_json(Path(root) / NAME, manifest)


def read(root: str | Path) -> dict:
    """The manifest of an export directory; one clear line when it is missing or names an unknown format."""
    root = Path(root)
    m = read_json(root / NAME)
    if not m:
        raise TuneforgeError(f"{root}: not a tuneforge export (no {NAME}); export with `tuneforge export ...`")
    if m.get("format") not in FORMATS:
        raise TuneforgeError(f"{root / NAME}: unknown format '{m.get('format')}' (known: {', '.join(FORMATS)})")
    return m


def is_export(path: str | Path) -> bool:
    return (Path(path) / NAME).is_file()


def record_verify(root: Path, result: dict) -> Path:
    """Store a verify result in the export's manifest (the files are re-hashed: they are what was verified)."""
    m = read(root)
    m["files"] = file_entries(Path(root))
    m["verify"] = result
    return write(root, m)


def total_bytes(root: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file() and f.name != NAME)
