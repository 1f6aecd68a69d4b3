"""ONNX export of a merged decoder with a KV cache, and a small onnxruntime generation loop for it.

`tuneforge export onnx RUN` → RUN/exports/onnx/: model.onnx (+ model.onnx.data when over 1.5 GB), config.json,
generation_config.json and the tokenizer with its chat template. `OrtCausalLM(dir)` runs it with onnxruntime
behind the small part of the transformers interface that `eval.harness` uses (generate, forward → logits).

The graph (names as optimum's, so other ONNX tooling recognises them):
  inputs  input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64, position_ids [batch, seq] int64,
          past_key_values.{i}.key|value [batch, kv_heads, past, head_dim] float32 (past = 0 on the first step)
  outputs logits [batch, seq, vocab] float32, present.{i}.key|value [batch, kv_heads, past+seq, head_dim]
Exported with torch.onnx's dynamo exporter (torch.export) from transformers' own Llama code with eager
attention: optimum-onnx 0.1.0 pins an older transformers, and the dynamo path works with transformers 5.24.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf's 2 GB limit: larger weights go to model.onnx.data
OPSET = 18


def _kv_names(n_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def export_onnx(model, tokenizer, out: Path) -> None:
    """Trace `model` (a transformers causal LM, fp32, CPU) into out/model.onnx and save config + tokenizer."""
    import torch
    from transformers.cache_utils import DynamicCache

    model = model.float().eval()
    model.set_attn_implementation("eager")  # SDPA's mask handling does not export; eager is the same maths
    cfg = model.config
    n_layers = cfg.num_hidden_layers

    class Decoder(torch.nn.Module):
        """Flat tensors in and out: ONNX has no Cache objects."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.lm.config)
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          cache=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    b, s, p = 2, 4, 3  # example sizes: every axis is dynamic in the graph
    kv = [torch.zeros(b, cfg.num_key_value_heads, p, _head_dim(cfg)) for _ in range(2 * n_layers)]
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    pos = torch.arange(p, p + s).expand(b, s)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecated pytree helpers
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
        torch.onnx.export(
            Decoder(model).eval(), (ids, mask, pos, *kv), str(out / MODEL_FILE), dynamo=True, opset_version=OPSET,
            input_names=["input_ids", "attention_mask", "position_ids", *_kv_names(n_layers, "past_key_values")],
            output_names=["logits", *_kv_names(n_layers, "present")],
            dynamic_shapes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                            "position_ids": {0: "batch", 1: "seq"},
                            "past": tuple({0: "batch", 2: "past"} for _ in kv)},
            external_data=weight_bytes > EXTERNAL_DATA_BYTES, verbose=False)
    cfg.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


class OrtCausalLM:
    """Greedy/sampled generation with a KV cache on an exported decoder, in onnxruntime (CPU).

    Duck-types what `eval.harness` needs from a transformers model: `generate(input_ids, attention_mask,
    ...)`, `__call__(input_ids, attention_mask, position_ids)` → `.logits`, `parameters()` (for the device)."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path / MODEL_FILE), opts, providers=["CPUExecutionProvider"])
        cfg = json.loads((self.path / "config.json").read_text())
        self.n_layers = cfg["num_hidden_layers"]
        self.kv_heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.past_names = _kv_names(self.n_layers, "past_key_values")
        gen = self.path / "generation_config.json"
        self.generation_config = SimpleNamespace(**(json.loads(gen.read_text()) if gen.is_file() else {}))

    # --- the transformers-shaped surface -------------------------------------------------------------
    def eval(self):
        return self

    def parameters(self):
        import torch

        yield torch.zeros(())  # harness asks for the device of the first parameter: the CPU

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             past: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass: (logits [b, s, vocab], present key/values)."""
        b = input_ids.shape[0]
        if past is None:
            past = [np.zeros((b, self.kv_heads, 0, self.head_dim), np.float32)] * (2 * self.n_layers)
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": position_ids.astype(np.int64), **dict(zip(self.past_names, past))}
        logits, *present = self.session.run(None, feeds)
        return logits, present

    def __call__(self, input_ids, attention_mask=None, position_ids=None, **_ignored):
        import torch

        ids = np.asarray(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        pos = np.clip(mask.cumsum(-1) - 1, 0, None) if position_ids is None else np.asarray(position_ids)
        logits, _ = self.step(ids, mask, pos)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits at every position of one unpadded sequence [len(ids), vocab]."""
        arr = np.asarray([ids], np.int64)
        return self.step(arr, np.ones_like(arr), np.arange(len(ids))[None])[0][0]

    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None,
                 min_new_tokens: int = 0, **_ignored):
        """Left-padded batch in, prompt + new tokens out (a torch LongTensor, like transformers' generate).

        Rows that produced EOS are filled with `pad_token_id` afterwards; greedy unless do_sample."""
        import torch

        ids = np.asarray(input_ids, np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        pad = pad_token_id if pad_token_id is not None else (next(iter(eos)) if eos else 0)
        pos = np.clip(mask.cumsum(-1) - 1, 0, None)
        logits, past = self.step(ids, mask, pos)
        done = np.zeros(ids.shape[0], bool)
        out = [ids]
        for t in range(max_new_tokens):
            last = logits[:, -1, :].astype(np.float64)
            if t < min_new_tokens and eos:
                last[:, list(eos)] = -np.inf
            nxt = _sample(last, temperature, top_p) if do_sample else last.argmax(-1)
            nxt = np.where(done, pad, nxt)
            out.append(nxt[:, None])
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
            mask = np.concatenate([mask, np.ones((ids.shape[0], 1), np.int64)], axis=1)
            pos = pos[:, -1:] + 1
            logits, past = self.step(nxt[:, None], mask, pos, past)
        return torch.from_numpy(np.concatenate(out, axis=1))


def _sample(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Temperature + nucleus sampling from torch's RNG (so `torch.manual_seed` makes runs repeatable)."""
    import torch

    probs = torch.softmax(torch.from_numpy(logits) / max(temperature, 1e-6), dim=-1)
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1)
    return idx.gather(-1, choice)[:, 0].numpy()
