"""Check an export against the model as trained, on golden prompts, before anyone ships it.

`tuneforge export verify RUN EXPORT [--data F]` (every `export` command runs it unless --no-verify): prints a
table, records the result in EXPORT/manifest.json and exits 1 on a failed check.

The reference is the run as trained, in fp32 on the CPU: base + adapter through peft (not merged), or a full
run's model/. Golden prompts are the run's validation examples (config.yaml's `val_data`, else the same seeded
hold-out of `data` that training validated on), `--data` to use others. Each runtime gets the same token ids.

Checks and bounds (BOUNDS below):
- tokenizer: the export's own tokenizer renders the chat template to the same text and ids, with the same
  EOS id (a lost chat template or EOS is the most common broken export).
- greedy: the export's greedy answers (max_new_tokens each) equal the reference's. Required for merged, ONNX
  and GGUF f16. A divergence is accepted only as a near-tie: at the first differing token the reference
  preferred its token over the export's by no more than the format's logits tolerance, i.e. a difference the
  logits bound already allows could flip the argmax. Reported, not required, for quantized formats.
- logits: max |logit difference| at every position of prompt + reference answer (teacher-forced).
  merged and ONNX ≤ 1e-3: both fp32, only the summation order differs (W·x + B·A·x vs (W+BA)·x; onnxruntime's
  kernels vs torch's). Measured: ONNX of a SmolLM2 LoRA run 1.3e-4 (4/4 greedy answers equal), tiny models
  ~4e-7. GGUF f16 ≤ 0.5: weights rounded to 11 significant bits (relative error ≤ 2^-11 each) move SmolLM2's
  logits (range ±39) by 0.04 (measured, transformers' GGUF reader); 0.5 leaves room for larger fine-tunes
  while still catching a wrong tensor layout (errors of several units). Quantized formats: reported only
  (their logits move by design: int8 moved SmolLM2's by up to 2.3); what matters is the task metric below.
- held-out loss: mean cross-entropy per supervised token of the golden examples' reference answers.
  The bound is one-sided: an export may be better than the run on 32 examples (quantization noise lowered
  SmolLM2's int8 loss by 3.0% once), only worse is a defect. Relative rise allowed: int8 and GGUF q8_0 3% (8-bit weights with a scale per channel / per 32 weights),
  int4 15% (4-bit weights in groups of 32: a 135M model has little redundancy to absorb the error), GGUF f16 1%.
  These are acceptance bounds, chosen from the precision of each format; bench/export.py measures the actual
  changes on SmolLM2 (bench/RESULTS.md).
- GGUF only, when llama-cpp-python is installed: llama.cpp loads the file, tokenizes the prompt to the same
  ids, carries the chat template, and (f16) produces the reference's greedy answer (near-ties as above,
  with llama.cpp's own f16 kernels).
"""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.export import manifest

N_PROMPTS = 8  # golden prompts generated greedily by both models
N_EXAMPLES = 32  # golden examples scored by held-out loss
MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class Bounds:
    greedy: bool  # greedy answers must equal the reference's (near-ties excepted)
    logits_atol: float | None  # max |Δlogit|, None = reported only
    loss_rel: float | None  # max (export loss - run loss) / run loss, None = reported only
    tie_atol: float  # a first divergence whose reference margin is at most this counts as a near-tie


BOUNDS = {
    "merged": Bounds(greedy=True, logits_atol=1e-3, loss_rel=None, tie_atol=1e-3),
    "onnx": Bounds(greedy=True, logits_atol=1e-3, loss_rel=None, tie_atol=1e-3),
    "gguf-f16": Bounds(greedy=True, logits_atol=0.5, loss_rel=0.01, tie_atol=0.5),
    "gguf-q8_0": Bounds(greedy=False, logits_atol=None, loss_rel=0.03, tie_atol=0.0),
    "int8": Bounds(greedy=False, logits_atol=None, loss_rel=0.03, tie_atol=0.0),
    "int4": Bounds(greedy=False, logits_atol=None, loss_rel=0.15, tie_atol=0.0),
}


@dataclass
class Check:
    name: str
    value: str
    bound: str
    passed: bool | None  # None = reported only
    detail: dict = field(default_factory=dict)

    def __post_init__(self):
        self.passed = None if self.passed is None else bool(self.passed)  # numpy bools do not serialise


# --- runtimes: each turns token ids into logits and greedy answers --------------------------------------
class TorchRunner:
    """A transformers (or peft) model."""

    def __init__(self, model, eos: int, pad: int):
        self.model, self.eos, self.pad = model, eos, pad

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        import torch

        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                      do_sample=False, eos_token_id=self.eos, pad_token_id=self.pad)
        return _until_eos(out[0, len(ids):].tolist(), self.eos)


class OrtRunner:
    """An ONNX export in onnxruntime (our KV-cache loop)."""

    def __init__(self, path: Path, eos: int, pad: int):
        from tuneforge.export.onnx import OrtCausalLM

        self.lm, self.eos, self.pad = OrtCausalLM(path), eos, pad

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.lm.logits(ids)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        out = self.lm.generate(np.asarray([ids]), max_new_tokens=n, eos_token_id=self.eos, pad_token_id=self.pad)
        return _until_eos(out[0, len(ids):].tolist(), self.eos)


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


# --- golden data ---------------------------------------------------------------------------------------
def golden_samples(run, data: str | Path | None = None) -> tuple[list, str]:
    """(samples, where they came from): --data, else the run's validation examples."""
    from tuneforge.data.load import load_samples
    from tuneforge.train.objectives.sft import holdout

    if data:
        return load_samples(data), str(data)
    cfg = run.config
    if cfg.get("val_data") and Path(cfg["val_data"]).is_file():
        return load_samples(cfg["val_data"]), f"{cfg['val_data']} (the run's val_data)"
    if cfg.get("data") and Path(cfg["data"]).is_file():
        samples = load_samples(cfg["data"])
        _, val = holdout(samples, float(cfg.get("val_split", 0.1)), int(cfg.get("seed", 42)))
        if val:
            return val, f"{cfg['data']} (the run's seeded validation hold-out)"
        return samples, f"{cfg['data']} (no hold-out: training examples)"
    raise TuneforgeError(f"{run.path}: its training data is not found ({cfg.get('data')}); give golden prompts "
                         "with --data FILE")


def prompt_ids(sample, tokenizer) -> list[int]:
    from tuneforge.data.tokenize import render_prompt

    return tokenizer(render_prompt(sample, tokenizer), add_special_tokens=False)["input_ids"]


def heldout_loss(runner, encoded: list) -> float:
    """Mean CE per supervised token (the reference answers), computed from the runtime's logits."""
    from tuneforge.data.tokenize import IGNORE

    total, n = 0.0, 0
    for e in encoded:
        logits = runner.logits(e.input_ids).astype(np.float64)
        for t in range(1, len(e.input_ids)):
            if e.labels[t] != IGNORE:
                row = logits[t - 1]
                m = row.max()
                total += (m + math.log(np.exp(row - m).sum())) - row[e.labels[t]]
                n += 1
    return float(total / max(n, 1))


# --- the export under test ----------------------------------------------------------------------------
def detect_format(export: Path) -> str:
    """The format of an export dir: its manifest, else what the files say."""
    if manifest.is_export(export):
        return manifest.read(export)["format"]
    if export.suffix == ".gguf" or (export.is_dir() and list(export.glob("*.gguf"))):
        from tuneforge.export.gguf import find_gguf

        return "gguf-q8_0" if "q8_0" in find_gguf(export).name else "gguf-f16"
    if (export / "model.onnx").is_file():
        return "onnx"
    cfg = export / "config.json"
    if cfg.is_file():
        q = json.loads(cfg.read_text()).get("quantization_config")
        if not q:
            return "merged"
        kind = json.dumps(q)
        if q.get("quant_method") == "torchao":
            return "int4" if "IntxWeightOnlyConfig" in kind else "int8"
    raise TuneforgeError(f"{export}: not an export this tool can verify (no manifest.json, model.onnx, .gguf "
                         "or config.json)")


def load_export(export: Path, fmt: str, eos: int, pad: int):
    """(runner, tokenizer) for the export, loaded by the library a user of that format would use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if fmt == "onnx":
        return OrtRunner(export, eos, pad), AutoTokenizer.from_pretrained(str(export))
    if fmt.startswith("gguf"):
        from tuneforge.export.gguf import find_gguf

        f = find_gguf(export)
        tok = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
        model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32)
        return TorchRunner(model.eval(), eos, pad), tok
    model = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32, device_map="cpu")
    return TorchRunner(model.eval(), eos, pad), AutoTokenizer.from_pretrained(str(export))


# --- comparisons -----------------------------------------------------------------------------------------
def compare_greedy(ref: list[list[int]], got: list[list[int]], ref_logits: list[np.ndarray],
                   prompt_lens: list[int], tie_atol: float) -> dict:
    """Per prompt: equal, near-tie (first divergence within tie_atol of the reference's choice) or differs."""
    equal, ties, differ, first_diff = 0, 0, 0, []
    for r, g, lg, plen in zip(ref, got, ref_logits, prompt_lens):
        if r == g:
            equal += 1
            continue
        i = next((k for k in range(min(len(r), len(g))) if r[k] != g[k]), min(len(r), len(g)))
        if i < len(r) and i < len(g):
            row = lg[plen + i - 1]
            margin = float(row[r[i]] - row[g[i]])
        else:
            margin = math.inf  # one stopped early: not a tie between two tokens
        if margin <= tie_atol:
            ties += 1
        else:
            differ += 1
        first_diff.append({"token": i, "reference_margin": margin})
    return {"equal": equal, "near_ties": ties, "differ": differ, "prompts": len(ref), "divergences": first_diff}


def run_checks(run, export: Path, fmt: str, *, data=None, n_prompts: int = N_PROMPTS,
               n_examples: int = N_EXAMPLES, max_new_tokens: int = MAX_NEW_TOKENS, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from tuneforge.data.tokenize import encode
    from tuneforge.export.merge import trained_model

    bounds = BOUNDS[fmt]
    samples, source = golden_samples(run, data)
    prompts = samples[:n_prompts]
    scored = [s for s in samples if s.messages is None or s.reference is not None][:n_examples]
    if not prompts:
        raise TuneforgeError(f"{source}: no golden examples to verify with")
    bar = tqdm(total=4, desc="verify", disable=not progress, file=sys.stderr)

    def stage(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    model, tok = trained_model(run)
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    max_len = int(run.config.get("max_seq_len", 1024))
    ids = [prompt_ids(s, tok) for s in prompts]
    texts = [tok.decode(i) for i in ids]
    encoded = [e for e in (encode(s, tok, max_seq_len=max_len) for s in scored) if e.n_supervised]
    reference = TorchRunner(model, eos, pad)
    ref_answers = [reference.greedy(i, max_new_tokens) for i in ids]
    ref_logits = [reference.logits(i + a) for i, a in zip(ids, ref_answers)]
    ref_loss = heldout_loss(reference, encoded)
    ref_template = tok.chat_template
    del model, reference
    stage("reference done")

    runner, etok = load_export(export, fmt, eos, pad)
    stage("export loaded")
    checks: list[Check] = []
    same_ids = all(etok(t, add_special_tokens=False)["input_ids"] == i for t, i in zip(texts, ids))
    same_render = all(prompt_ids(s, etok) == i for s, i in zip(prompts, ids))
    tok_ok = same_ids and same_render and etok.eos_token_id == eos
    checks.append(Check("tokenizer", "same ids, chat template, EOS" if tok_ok else
                        f"ids {'ok' if same_ids else 'differ'}, chat template "
                        f"{'ok' if same_render else 'differs'}, EOS {etok.eos_token_id} vs {eos}",
                        "identical", tok_ok, {"eos_token_id": etok.eos_token_id,
                                              "chat_template_equal": etok.chat_template == ref_template}))
    answers = [runner.greedy(i, max_new_tokens) for i in ids]
    g = compare_greedy(ref_answers, answers, ref_logits, [len(i) for i in ids], bounds.tie_atol)
    checks.append(Check("greedy answers", f"{g['equal']}/{g['prompts']} equal" +
                        (f", {g['near_ties']} near-tie" if g["near_ties"] else ""),
                        f"all equal (near-ties ≤ {bounds.tie_atol:g})" if bounds.greedy else "reported",
                        (g["differ"] == 0) if bounds.greedy else None, g))
    diffs = [float(np.abs(runner.logits(i + a) - lg).max()) for i, a, lg in zip(ids, ref_answers, ref_logits)]
    checks.append(Check("max |Δ logits|", f"{max(diffs):.2e}",
                        f"≤ {bounds.logits_atol:g}" if bounds.logits_atol is not None else "reported",
                        None if bounds.logits_atol is None else max(diffs) <= bounds.logits_atol,
                        {"per_prompt": diffs}))
    stage("greedy + logits done")
    loss = heldout_loss(runner, encoded)
    rel = (loss - ref_loss) / max(ref_loss, 1e-9)
    checks.append(Check("held-out loss", f"{ref_loss:.4f} → {loss:.4f} ({100 * rel:+.2f}%)",
                        f"Δ ≤ +{100 * bounds.loss_rel:g}%" if bounds.loss_rel is not None else "reported",
                        None if bounds.loss_rel is None else rel <= bounds.loss_rel,
                        {"reference": ref_loss, "export": loss, "relative_change": rel,
                         "examples": len(encoded)}))
    del runner
    if fmt.startswith("gguf"):
        checks += llama_cpp_checks(export, fmt, ids, texts, ref_answers, ref_logits, ref_template, bounds,
                                   max_new_tokens, eos)
    stage("done")
    bar.close()
    passed = all(c.passed is not False for c in checks)
    return {"passed": passed, "format": fmt, "export": str(export), "run": str(run.path),
            "golden": {"source": source, "prompts": len(ids), "examples": len(encoded),
                       "max_new_tokens": max_new_tokens},
            "bounds": asdict(bounds), "checks": [asdict(c) for c in checks]}


def llama_cpp_checks(export: Path, fmt: str, ids, texts, ref_answers, ref_logits, ref_template, bounds,
                     max_new_tokens: int, eos: int) -> list[Check]:
    """llama.cpp (through llama-cpp-python) as an independent GGUF reader; skipped when not installed."""
    from tuneforge.export.gguf import find_gguf

    try:
        from llama_cpp import Llama
    except ImportError:
        return [Check("llama.cpp", "skipped: llama-cpp-python not installed", "reported", None)]
    f = find_gguf(export)
    import gguf

    if "tokenizer.ggml.merges" not in gguf.GGUFReader(str(f)).fields:
        return [Check("llama.cpp", "skipped: the tokenizer has no BPE merges, which llama.cpp requires",
                      "reported", None)]
    llm = Llama(model_path=str(f), n_ctx=2048, n_threads=2, verbose=False, logits_all=False)
    same_ids = all(llm.tokenize(t.encode(), add_bos=False, special=True) == i for t, i in zip(texts, ids))
    template = llm.metadata.get("tokenizer.chat_template")
    checks = [Check("llama.cpp tokenizer", "same ids, chat template" if same_ids and template == ref_template
                    else f"ids {'ok' if same_ids else 'differ'}, template "
                         f"{'ok' if template == ref_template else 'differs'}",
                    "identical", same_ids and template == ref_template)]
    answers = []
    for i in ids:
        llm.reset()
        out = []
        for t in llm.generate(i, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(t))
            if t == eos or len(out) >= max_new_tokens:
                break
        answers.append(out)
    g = compare_greedy(ref_answers, answers, ref_logits, [len(i) for i in ids], bounds.tie_atol)
    checks.append(Check("llama.cpp greedy", f"{g['equal']}/{g['prompts']} equal" +
                        (f", {g['near_ties']} near-tie" if g["near_ties"] else ""),
                        f"all equal (near-ties ≤ {bounds.tie_atol:g})" if bounds.greedy else "reported",
                        (g["differ"] == 0) if bounds.greedy else None, g))
    return checks


def verify(run_dir: str | Path, export: str | Path, *, data=None, record: bool = True, progress: bool = True,
           n_prompts: int = N_PROMPTS, n_examples: int = N_EXAMPLES,
           max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Run the checks; store the result in EXPORT/manifest.json when there is one."""
    from tuneforge.run import read_run

    run = read_run(run_dir)
    export = Path(export)
    if not export.exists():
        raise TuneforgeError(f"{export}: export not found")
    fmt = detect_format(export)
    result = run_checks(run, export, fmt, data=data, n_prompts=n_prompts, n_examples=n_examples,
                        max_new_tokens=max_new_tokens, progress=progress)
    if record and manifest.is_export(export):
        manifest.record_verify(export, result)
    return result


def format_table(result: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    g = result["golden"]
    head = (f"verify {result['format']}: {result['export']}\n  against {result['run']} as trained, on "
            f"{g['prompts']} prompts / {g['examples']} examples from {g['source']}\n")
    t = Table()
    for col in ("check", "value", "bound", "result"):
        t.add_column(col)
    for c in result["checks"]:
        t.add_row(c["name"], c["value"], c["bound"],
                  {True: "pass", False: "FAIL", None: "-"}[c["passed"]])
    con = Console(width=150, record=True, file=io.StringIO())  # render to text
    con.print(t)
    verdict = "PASSED" if result["passed"] else "FAILED"
    return head + con.export_text() + f"verify: {verdict}\n"
