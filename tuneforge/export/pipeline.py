"""One export, start to finish: merged weights → format writer → manifest → verify against the run as trained.

Used by `tuneforge export quantize|onnx|gguf` (library: `export_run(RUN, "int8")`). The export directory
is written atomically (a temp dir renamed into place), then verified; the verify result goes into its
manifest.json, and a failed verify is reported (exit 1 in the CLI) with the export left in place to inspect.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.export import manifest
from tuneforge.run import read_run, write_atomic_dir


@dataclass
class Exported:
    path: Path
    manifest: dict
    verify: dict | None
    warnings: list[str]


NEEDS = {"int8": ("torchao",), "int4": ("torchao",), "onnx": ("onnx", "onnxscript", "onnxruntime")}


def check_installed(fmt: str) -> None:
    """One clear line before any work when the format's optional libraries are missing."""
    import importlib.util

    missing = [m for m in NEEDS.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneforgeError(f"export {fmt} needs {', '.join(missing)}: pip install 'tuneforge[export]'")


def _write(fmt: str, run, out: Path) -> tuple[dict, list[str]]:
    """Write the format's files into `out`; returns (settings for the manifest, warnings)."""
    from tuneforge.export.merge import merged_model

    if fmt in ("int8", "int4"):
        from tuneforge.export import quantize

        bits = 8 if fmt == "int8" else 4
        if run.model is not None:
            quantize.quantize_dir(run.model, out, bits)
        else:  # quantize from a merged copy in a temp dir (the run's model/ is not written as a side effect)
            model, tok = merged_model(run)
            with tempfile.TemporaryDirectory(prefix="tuneforge-merged-") as td:
                model.save_pretrained(td)
                tok.save_pretrained(td)
                del model
                quantize.quantize_dir(td, out, bits)
        return quantize.settings(bits), []
    model, tok = merged_model(run)
    if fmt == "onnx":
        from tuneforge.export.onnx import OPSET, export_onnx

        export_onnx(model, tok, out)
        return {"opset": OPSET, "exporter": "torch.onnx (dynamo)", "dtype": "float32", "kv_cache": True}, []
    if fmt.startswith("gguf-"):
        from tuneforge.export.gguf import gguf_name, write_gguf

        qtype = fmt.removeprefix("gguf-")
        warnings = write_gguf(model, tok, out / gguf_name(qtype), qtype, name=run.path.name)
        return {"type": qtype, "architecture": "llama", "writer": "gguf (python)"}, warnings
    raise TuneforgeError(f"unknown export format '{fmt}' (have: {', '.join(manifest.FORMATS)})")


def export_run(run_dir: str | Path, fmt: str, output: str | Path | None = None, *, verify: bool = True,
               data=None, progress: bool = True) -> Exported:
    """Export `run_dir` as `fmt` (int8, int4, onnx, gguf-f16, gguf-q8_0) and verify it unless told not to."""
    from tuneforge.export.merge import require_mergeable

    if fmt not in manifest.FORMATS or fmt == "merged":
        raise TuneforgeError(f"unknown export format '{fmt}' (have: {', '.join(manifest.FORMATS[1:])})")
    check_installed(fmt)
    run = read_run(run_dir)
    require_mergeable(run)  # fails fast (before minutes of work) for prompt-tuning runs
    out = Path(output) if output else manifest.default_dir(run.path, fmt)
    state: dict = {}

    def write(d: Path) -> None:
        settings, warnings = _write(fmt, run, d)
        state["warnings"] = warnings
        manifest.write(d, manifest.build(d, fmt, run.path, settings))

    print(f"tuneforge: exporting {run.path} as {fmt} → {out}", file=sys.stderr)
    write_atomic_dir(out, write)
    for w in state.get("warnings", []):
        print(f"tuneforge: warning: {w}", file=sys.stderr)
    result = None
    if verify:
        from tuneforge.export.verify import verify as run_verify

        result = run_verify(run.path, out, data=data, progress=progress)
    return Exported(out, manifest.read(out), result, state.get("warnings", []))
