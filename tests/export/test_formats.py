"""Every export format from a tiny LoRA run: written with a manifest, reloaded by the format's own reader,
and passing `export verify` against the run as trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tf
from tuneforge.export import manifest
from tuneforge.export.pipeline import export_run
from tuneforge.run import file_sha256

PROMPT = [{"role": "user", "content": "add 12 and 30"}]


def _merged(run: Path):
    from tuneforge.export.merge import merged_model
    from tuneforge.run import read_run

    return merged_model(read_run(run))


def _assert_verified(done) -> None:
    assert done.verify["passed"], json.dumps(done.verify["checks"], indent=1)
    m = manifest.read(done.path)
    assert m["verify"]["passed"] and m["source_run"].endswith("run")
    for f in m["files"]:  # the manifest's hashes are the files' hashes
        assert file_sha256(done.path / f["path"]) == f["sha256"]
    names = [c["name"] for c in m["verify"]["checks"]]
    assert {"tokenizer", "greedy answers", "max |Δ logits|", "held-out loss"} <= set(names)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_export_reloads_with_plain_transformers_and_verifies(export_source_run, fmt):
    from transformers import AutoModelForCausalLM

    done = export_run(export_source_run, fmt, progress=False)
    _assert_verified(done)
    assert done.path == export_source_run / "exports" / fmt
    model = AutoModelForCausalLM.from_pretrained(str(done.path))
    w = model.model.layers[0].mlp.up_proj.weight
    assert type(w).__module__.startswith("torchao"), type(w)  # stored quantized, not dequantized fp32
    loss = next(c for c in done.verify["checks"] if c["name"] == "held-out loss")
    assert loss["detail"]["relative_change"] <= {"int8": 0.03, "int4": 0.15}[fmt]  # one-sided: better is fine


ORT_SCRIPT = r'''
import json, sys
sys.modules["tuneforge"] = None  # any import of tuneforge now fails: this runs on onnxruntime alone
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
d = sys.argv[1]
cfg = json.load(open(f"{d}/config.json"))
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
ids = tok.encode(sys.argv[2], add_special_tokens=False).ids
eos = cfg["eos_token_id"]
sess = ort.InferenceSession(f"{d}/model.onnx", providers=["CPUExecutionProvider"])
L, H = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
D = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
names = [i.name for i in sess.get_inputs()][3:]
past = {n: np.zeros((1, H, 0, D), np.float32) for n in names}
x, out, first = np.array([ids]), [], None
for step in range(16):
    n_past = past[names[0]].shape[2]
    feeds = {"input_ids": x, "attention_mask": np.ones((1, n_past + x.shape[1]), np.int64),
             "position_ids": np.arange(n_past, n_past + x.shape[1])[None], **past}
    logits, *present = sess.run(None, feeds)
    if first is None:
        first = logits[0, -1].tolist()
    nxt = int(logits[0, -1].argmax())
    out.append(nxt)
    if nxt == eos:
        break
    past = dict(zip(names, present))
    x = np.array([[nxt]])
print(json.dumps({"first_logits": first, "tokens": out}))
'''


def test_onnx_runs_in_onnxruntime_alone_and_matches_the_merged_model(export_source_run, tmp_path):
    done = export_run(export_source_run, "onnx", progress=False)
    _assert_verified(done)
    model, tok = _merged(export_source_run)
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    script = tmp_path / "ort_generate.py"
    script.write_text(ORT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(script), str(done.path), text], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    x = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref_first = model(x).logits[0, -1].numpy()
        ref = model.generate(x, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[0, x.shape[1]:].tolist()
    assert np.abs(np.array(got["first_logits"]) - ref_first).max() < 1e-3  # verify's ONNX logits bound
    assert got["tokens"] == ref[:len(got["tokens"])] and len(got["tokens"]) == len(ref)


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_gguf_has_tokenizer_and_template_and_reads_back_in_transformers(export_source_run, qtype):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done = export_run(export_source_run, f"gguf-{qtype}", progress=False)
    _assert_verified(done)
    f = done.path / f"model-{qtype}.gguf"
    model, tok = _merged(export_source_run)
    reader = gguf.GGUFReader(str(f))
    fields = {k: v.contents() for k, v in reader.fields.items() if k != "tokenizer.ggml.tokens"}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert reader.fields["tokenizer.ggml.tokens"].contents()[tok.eos_token_id] == tok.eos_token
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == qtype.upper() and kinds["blk.0.attn_norm.weight"] == "F32"
    g_tok = AutoTokenizer.from_pretrained(str(done.path), gguf_file=f.name)
    g_model = AutoModelForCausalLM.from_pretrained(str(done.path), gguf_file=f.name, dtype=torch.float32)
    x = tok(tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True), return_tensors="pt",
            add_special_tokens=False)["input_ids"]
    assert g_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == \
        tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    kw = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with torch.no_grad():
        assert g_model.generate(x, **kw).tolist() == model.generate(x, **kw).tolist()


def test_merge_writes_a_manifest_and_verify_passes_through_the_cli(export_source_run):
    r = tf("export", "merge", str(export_source_run))
    assert r.returncode == 0, r.stderr
    assert "verify: PASSED" in r.stdout and "greedy answers" in r.stdout
    assert manifest.read(export_source_run / "model")["verify"]["passed"]


def test_verify_fails_on_an_export_that_lost_its_chat_template_or_weights(export_source_run, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    broken = tmp_path / "broken"
    export_run(export_source_run, "int8", broken, verify=False, progress=False)
    cfg = json.loads((broken / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (broken / "tokenizer_config.json").write_text(json.dumps(cfg))
    (broken / "chat_template.jinja").unlink(missing_ok=True)
    r = tf("export", "verify", str(export_source_run), str(broken))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "verify: FAILED" in r.stdout
    assert manifest.read(broken)["verify"]["passed"] is False

    noisy = tmp_path / "noisy"  # a "merged" model whose weights drifted: logits and greedy checks catch it
    model, tok = _merged(export_source_run)
    with torch.no_grad():
        for p in model.model.layers[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(noisy)
    tok.save_pretrained(noisy)
    r = tf("export", "verify", str(export_source_run), str(noisy))
    assert r.returncode == 1 and "max |Δ logits|" in r.stdout
    shutil.rmtree(noisy)


def test_generate_runs_onnx_gguf_and_int8_exports_like_the_run(export_source_run):
    for fmt in ("onnx", "gguf-f16", "int8"):
        if not (export_source_run / "exports" / fmt).is_dir():
            export_run(export_source_run, fmt, verify=False, progress=False)
    want = tf("generate", str(export_source_run), "add 12 and 30", "--max-new-tokens", "12")
    assert want.returncode == 0, want.stderr
    for fmt in ("onnx", "gguf-f16", "int8"):
        got = tf("generate", str(export_source_run / "exports" / fmt), "add 12 and 30", "--max-new-tokens", "12")
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout, fmt


def test_eval_scores_an_onnx_export(export_source_run, tmp_path):
    if not (export_source_run / "exports" / "onnx").is_dir():
        export_run(export_source_run, "onnx", verify=False, progress=False)
    from tuneforge.run import read_config

    r = tf("eval", str(export_source_run / "exports" / "onnx"), "--data", read_config(export_source_run)["data"], "--limit", "4",
           "--max-new-tokens", "6", "--no-progress", "--output", str(tmp_path / "eval.json"))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["n_examples"] == 4 and res["models"]["tuned"]["metrics"]["perplexity"] > 1


def test_bad_export_requests_fail_with_one_line(export_source_run, tmp_path):
    r = tf("export", "quantize", str(export_source_run), "--bits", "3")
    assert r.returncode == 2 and r.stderr.startswith("error: --bits 3")
    r = tf("export", "gguf", str(export_source_run), "--type", "q4_k")
    assert r.returncode == 2 and "--type q4_k" in r.stderr
    r = tf("export", "verify", str(export_source_run), str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "export not found" in r.stderr
    r = tf("export", "onnx", str(tmp_path))
    assert r.returncode == 2 and "not a tuneforge run" in r.stderr
