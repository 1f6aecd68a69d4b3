"""CUDA check of the shared decoding core (models/decode.py), run on a lent GPU machine (no tuneforge deps
beyond torch + transformers): seeded sampling draws from CPU generators (the server's per-request seeds, GRPO's
per-answer seeds) while the logits live on the GPU, so `sample` must draw where the generator lives.

    python bench/cuda_decode_check.py          # prints OK lines, exits non-zero on a mismatch
Checks: (1) sample() with CUDA logits + CPU generators runs and draws the same tokens as with CPU logits;
(2) a tiny random Llama on CUDA, decoded through Batch.prefill/decode, greedy = transformers' generate and
seeded sampling repeats exactly; (3) the same prompts at temperature 1 give the same tokens on CPU and CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tuneforge.models.decode import Batch, sample  # noqa: E402


class Seq:
    def __init__(self, i, ids, temperature, max_tokens=12):
        self.id, self.prompt_ids, self.tokens_out = i, ids, []
        self.params = SimpleNamespace(max_tokens=max_tokens, temperature=temperature, top_p=1.0, min_tokens=0)


class Group:
    def __init__(self, model):
        self.model, self.tokenizer = model, SimpleNamespace(pad_token_id=0)

    def forward(self, adapters, **kw):
        return self.model(**kw).logits[:, -1, :]


def decode(model, prompts, temperature, seed=0):
    g = Group(model)
    seqs = [Seq(i, p, temperature) for i, p in enumerate(prompts)]
    gens = {s.id: torch.Generator().manual_seed(seed + s.id) for s in seqs}
    batch, logits = Batch.prefill(g, seqs, [None] * len(seqs))
    for _ in range(12):
        toks = sample(logits.float(), batch.seqs, gens, set())
        for s, t in zip(batch.seqs, toks):
            s.tokens_out.append(t)
        batch.last = torch.tensor(toks, dtype=torch.long, device=batch.mask.device)
        logits = batch.decode(g)
    return [s.tokens_out for s in seqs]


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    print("torch", torch.__version__, torch.cuda.get_device_name())
    logits = torch.randn(3, 500)
    seqs = [Seq(i, [1], 1.0) for i in range(3)]
    cpu = sample(logits.clone(), seqs, {i: torch.Generator().manual_seed(i) for i in range(3)}, set())
    gpu = sample(logits.cuda(), seqs, {i: torch.Generator().manual_seed(i) for i in range(3)}, set())
    assert cpu == gpu, (cpu, gpu)
    print("OK 1: sample() with CUDA logits and CPU generators draws the CPU tokens", gpu)

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    m_cpu = LlamaForCausalLM(cfg).eval()
    m_gpu = LlamaForCausalLM(cfg).eval()
    m_gpu.load_state_dict(m_cpu.state_dict())
    m_gpu.cuda()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22]]
    greedy = decode(m_gpu, prompts, 0.0)
    for p, out in zip(prompts, greedy):
        ref = m_gpu.generate(torch.tensor([p]).cuda(), max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert ref[0, len(p):].tolist() == out, (ref[0, len(p):].tolist(), out)
    print("OK 2a: greedy over Batch on CUDA = transformers generate", greedy[0])
    a, b = decode(m_gpu, prompts, 1.0, seed=7), decode(m_gpu, prompts, 1.0, seed=7)
    assert a == b
    print("OK 2b: seeded sampling on CUDA repeats exactly", a[1])
    c = decode(m_cpu, prompts, 1.0, seed=7)
    same = sum(x == y for x, y in zip(a, c))
    print(f"OK 3: seeded sampling CPU vs CUDA: {same}/{len(a)} rows identical (fp32 kernels may differ in the "
          "last bits, which can flip a draw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
