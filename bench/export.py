"""Every export and optimize format of one run side by side: size on disk, load time, tokens/s, held-out loss.

    python bench/export.py                       # SmolLM2 LoRA run on examples/sql (--steps 30), then every format
    python bench/export.py --run runs/sql        # an existing run
    python bench/export.py --tiny --steps 4      # tiny random model: checks the plumbing only (~3 min)
    python bench/export.py --json export.json    # also save every figure

Rows: merged (the baseline: fp32 transformers), int8, int4, ONNX, GGUF f16/q8_0, pruned (--drop-layers K),
distilled (student = teacher minus K layers, --distill-steps steps on the teacher's answers). Ratios are
against `merged`, measured in the same process.
- size: bytes of the export's files; load: seconds from files to a ready model in the format's own runtime
  (transformers, onnxruntime, llama.cpp); tokens/s: greedy decoding, batch 1, exactly --new-tokens tokens per
  prompt (EOS suppressed), mean over --prompts prompts, in that runtime.
- held-out loss: mean cross-entropy per supervised token of the reference answers of the run's validation
  examples (--examples of them). GGUF rows compute it with transformers' GGUF reader (the same weights,
  dequantized), since llama-cpp-python does not return every position's logits cheaply.
GGUF speed is llama.cpp's when llama-cpp-python is installed, else transformers' on dequantized weights (the
table says which).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_run(args, work: Path) -> Path:
    from tuneforge.config import load_config
    from tuneforge.train.recipe import train

    overrides = {"data": str(ROOT / "examples/sql/train.jsonl"), "val_data": str(ROOT / "examples/sql/val.jsonl"),
                 "output": str(work / "run"), "max_steps": args.steps, "eval_steps": args.steps,
                 "per_device_train_batch_size": 8}
    if args.tiny:
        from tuneforge.models.tiny import save_tiny

        overrides["base"] = str(save_tiny(work / "tiny-base", seed=0, hidden_size=128, layers=4))
        overrides["learning_rate"] = 3e-3
    return train(load_config(None, overrides), progress=False)


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.name != "manifest.json")


class LlamaCppRunner:
    def __init__(self, path: Path):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)

    def timed_tokens(self, ids: list[int], n: int) -> tuple[int, float]:
        self.llm.reset()
        t0, got = time.perf_counter(), 0
        for _ in self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            got += 1
            if got >= n:
                break
        return got, time.perf_counter() - t0


def torch_tokens(model, ids: list[int], n: int, pad: int) -> tuple[int, float]:
    import torch

    x = torch.tensor([ids])
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=pad)
    return out.shape[1] - x.shape[1], time.perf_counter() - t0


def ort_tokens(lm, ids: list[int], n: int, eos: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = lm.generate(np.asarray([ids]), max_new_tokens=n, min_new_tokens=n, eos_token_id=eos, pad_token_id=eos)
    return out.shape[1] - len(ids), time.perf_counter() - t0


def measure_row(name: str, path: Path, kind: str, ids: list[list[int]], encoded: list, args, eos: int) -> dict:
    """Load in the format's runtime, decode, score. kind: transformers | onnx | gguf."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.export.verify import OrtRunner, TorchRunner, heldout_loss

    size = dir_bytes(path)
    runtime = {"transformers": "transformers", "onnx": "onnxruntime"}.get(kind)
    t0 = time.perf_counter()
    if kind == "transformers":
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, device_map="cpu").eval()
        load = time.perf_counter() - t0
        timed = [torch_tokens(model, i, args.new_tokens, eos) for i in ids]
        loss = heldout_loss(TorchRunner(model, eos, eos), encoded)
    elif kind == "onnx":
        runner = OrtRunner(path, eos, eos)
        load = time.perf_counter() - t0
        timed = [ort_tokens(runner.lm, i, args.new_tokens, eos) for i in ids]
        loss = heldout_loss(runner, encoded)
    else:
        from tuneforge.export.gguf import find_gguf

        f = find_gguf(path)
        try:
            runner = LlamaCppRunner(f)
            load = time.perf_counter() - t0
            timed = [runner.timed_tokens(i, args.new_tokens) for i in ids]
            runtime = "llama.cpp"
            del runner
        except (ImportError, ValueError):  # not installed, or llama.cpp refuses the file (no BPE merges)
            runtime = "transformers (GGUF dequantized)"
            model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32)
            load = time.perf_counter() - t0
            timed = [torch_tokens(model.eval(), i, args.new_tokens, eos) for i in ids]
        model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32)
        loss = heldout_loss(TorchRunner(model.eval(), eos, eos), encoded)
    tokens, seconds = sum(t for t, _ in timed), sum(s for _, s in timed)
    return {"format": name, "runtime": runtime, "size_mb": size / 1e6, "load_s": load,
            "tokens_per_s": tokens / seconds, "heldout_loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="An existing finished run (default: train one)")
    ap.add_argument("--tiny", action="store_true", help="Tiny random model: plumbing only")
    ap.add_argument("--steps", type=int, default=30, help="Training steps when the bench trains the run")
    ap.add_argument("--drop-layers", type=int, default=None, help="Layers removed for the pruned and distilled "
                    "rows (default: 1/5 of the layers)")
    ap.add_argument("--distill-steps", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--formats", default="merged,int8,int4,onnx,gguf-f16,gguf-q8_0,pruned,distilled")
    ap.add_argument("--json", help="Write every figure here")
    ap.add_argument("--workdir", help="Keep the run and exports here (default: a temp dir)")
    args = ap.parse_args()

    from tuneforge.data.tokenize import encode
    from tuneforge.export.merge import merge
    from tuneforge.export.pipeline import export_run
    from tuneforge.export.verify import golden_samples, prompt_ids
    from tuneforge.optimize.distill import distill
    from tuneforge.optimize.prune import prune
    from tuneforge.run import read_run

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.tiny:  # the distilled student's init is cached under TUNEFORGE_HOME: keep tiny ones out of yours
        os.environ.setdefault("TUNEFORGE_HOME", str(work / "home"))
    run_dir = Path(args.run) if args.run else make_run(args, work)
    run = read_run(run_dir)
    samples, source = golden_samples(run)
    formats = args.formats.split(",")
    paths: dict[str, tuple[Path, str]] = {}
    merged = run.model if run.model is not None and run.adapter is None else merge(run_dir)
    paths["merged"] = (merged, "transformers")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    n_layers = json.loads((merged / "config.json").read_text())["num_hidden_layers"]
    k = args.drop_layers or max(1, n_layers // 5)
    for fmt in ("int8", "int4", "onnx", "gguf-f16", "gguf-q8_0"):
        if fmt in formats:
            t0 = time.perf_counter()
            done = export_run(run_dir, fmt, verify=False, progress=False)
            print(f"exported {fmt} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            paths[fmt] = (done.path, "onnx" if fmt == "onnx" else "gguf" if fmt.startswith("gguf") else
                          "transformers")
    if "pruned" in formats:
        out, _ = prune(run_dir, drop_layers=k, output=work / "pruned")
        paths[f"pruned (-{k} layers)"] = (out / "model", "transformers")
    if "distilled" in formats:
        out, _ = distill(run_dir, f"drop-layers:{k}", run.config["data"], work / "distilled",
                         overrides={"max_steps": args.distill_steps, **({"val_data": run.config["val_data"]}
                                                                        if run.config.get("val_data") else {})},
                         progress=False)
        paths[f"distilled (-{k} layers, {args.distill_steps} steps)"] = (out / "model", "transformers")

    ids = [prompt_ids(s, tok) for s in samples[:args.prompts]]
    max_len = int(run.config.get("max_seq_len", 1024))
    encoded = [e for e in (encode(s, tok, max_seq_len=max_len) for s in samples[:args.examples]) if e.n_supervised]
    rows = []
    for name, (path, kind) in paths.items():
        row = measure_row(name, path, kind, ids, encoded, args, tok.eos_token_id)
        rows.append(row)
        print(f"measured {name}: {row}", file=sys.stderr)
    base = rows[0]
    print(f"\nrun {run_dir} ({run.info.get('base')}, {run.info.get('method')}); held-out: {len(encoded)} examples "
          f"of {source}; {len(ids)} prompts x {args.new_tokens} greedy tokens, batch 1; baseline: merged\n")
    print("| format | runtime | size MB | size ratio | load s | tokens/s | speed ratio | held-out loss | Δ loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['runtime']} | {r['size_mb']:.1f} | {r['size_mb'] / base['size_mb']:.2f}x | "
              f"{r['load_s']:.2f} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
              f"{r['heldout_loss']:.4f} | {100 * (r['heldout_loss'] - base['heldout_loss']) / base['heldout_loss']:+.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run_dir), "rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
