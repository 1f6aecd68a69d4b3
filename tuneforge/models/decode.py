"""Batched generation over a shared KV cache: the core both serving and on-policy training decode with.

`Batch` holds running sequences of one model that share a left-padded KV cache (`prefill`, `decode`, `filter`,
`extend`); `sample` picks each row's next token. The server's engine (`serve.engine`) drives it for continuous
batching; GRPO (`train`) samples groups of completions with it. It lives here, in layer 1, so both may import it.

A "group" is anything with `.model`, `.tokenizer` and `.forward(adapters, **model_kwargs) -> last-position
logits` (`serve.loading.ModelGroup` is one); a "seq" is anything with `.prompt_ids`, `.tokens_out`, `.params`
(`max_tokens`, `temperature`, `top_p`, `min_tokens`) and an integer `.id`; optionally a `.constraint` (an
object with `allowed(vocab_size) -> bool tensor | None` and `advance(token)`, e.g. a JSON-schema grammar:
`serve.structured`) restricting which tokens it may sample.
"""

from __future__ import annotations

import inspect
import math

import torch

SAMPLING_EPS = 1e-5  # temperatures below this are greedy (vLLM's rule): logits / 1e-300 overflow to inf and nan


_CACHE_KW: str | None = None


def cache_kw(model) -> str:
    """transformers renamed forward's `past_key_values` to `cache` (deprecated name removed in 5.40)."""
    global _CACHE_KW
    if _CACHE_KW is None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        _CACHE_KW = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return _CACHE_KW


class Batch:
    """Running sequences of one model group sharing a left-padded KV cache.

    mask[i, t] = 1 where column t of row i holds a real token; positions[i] = the position id of row i's next
    token; last[i] = the token row i feeds at the next step."""

    def __init__(self, seqs: list, adapters: list[str], cache, mask: torch.Tensor,
                 positions: torch.Tensor, last: torch.Tensor):
        self.seqs, self.adapters, self.cache = seqs, adapters, cache
        self.mask, self.positions, self.last = mask, positions, last

    def __len__(self) -> int:
        return len(self.seqs)

    @classmethod
    @torch.no_grad()
    def prefill(cls, group, seqs: list, adapters: list[str]) -> tuple["Batch", torch.Tensor]:
        """Run the prompts of `seqs` together (left-padded); returns the batch and the next-token logits."""
        from transformers import DynamicCache

        device = group.model.device
        width = max(len(s.prompt_ids) for s in seqs)
        pad = group.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[i, width - n:] = torch.tensor(s.prompt_ids)
            mask[i, width - n:] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=group.model.config)
        logits = group.forward(adapters, input_ids=ids, attention_mask=mask, position_ids=positions,
                               **{cache_kw(group.model): cache})
        batch = cls(list(seqs), list(adapters), cache, mask, mask.sum(-1), ids[:, -1])
        return batch, logits

    @torch.no_grad()
    def decode(self, group) -> torch.Tensor:
        """One token for every row: returns next-token logits [rows, vocab]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self), 1))], dim=1)
        logits = group.forward(self.adapters, input_ids=self.last[:, None], attention_mask=self.mask,
                               position_ids=self.positions[:, None], **{cache_kw(group.model): self.cache})
        self.positions = self.positions + 1
        return logits

    def filter(self, keep: list[int]) -> None:
        """Keep only rows `keep` and drop leading columns no remaining row uses (rows leaving)."""
        if len(keep) == len(self):
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.seqs = [self.seqs[i] for i in keep]
        self.adapters = [self.adapters[i] for i in keep]
        self.mask, self.positions, self.last = self.mask[idx], self.positions[idx], self.last[idx]
        used = self.mask.any(dim=0)
        start = int(used.to(torch.int8).argmax()) if bool(used.any()) else 0
        for layer in self.cache.layers:
            layer.keys = layer.keys[idx, :, start:]
            layer.values = layer.values[idx, :, start:]
        self.mask = self.mask[:, start:]

    def extend(self, other: "Batch") -> None:
        """Append the rows of `other` (a freshly prefilled batch): the shorter cache is left-padded."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def lpad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for a, b in zip(self.cache.layers, other.cache.layers):
            a.keys = torch.cat([lpad(a.keys, 2), lpad(b.keys, 2)], dim=0)
            a.values = torch.cat([lpad(a.values, 2), lpad(b.values, 2)], dim=0)
        self.mask = torch.cat([lpad(self.mask, 1), lpad(other.mask, 1)], dim=0)
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.seqs += other.seqs
        self.adapters += other.adapters


def sample(logits: torch.Tensor, seqs: list, generators: dict[int, torch.Generator],
           eos_ids: set[int]) -> list[int]:
    """Next token per row: argmax for temperature 0, else temperature + nucleus (top_p) sampling with the
    row's own generator (so a seeded request gives the same answer whatever else shares its batch).

    A row with a `constraint` samples only among the tokens it allows (the grammar's mask is applied before
    temperature and top_p, as vLLM does), and the constraint is advanced by the chosen token. Rows without
    one are untouched, so constrained and free rows share a batch. `logits` is modified in place."""
    for i, s in enumerate(seqs):
        if len(s.tokens_out) < s.params.min_tokens:
            logits[i, list(eos_ids)] = -math.inf
        c = getattr(s, "constraint", None)
        if c is not None:
            allowed = c.allowed(logits.shape[-1])
            if allowed is not None:
                logits[i].masked_fill_(~allowed.to(logits.device), -math.inf)
    out = logits.argmax(-1).tolist()
    for i, s in enumerate(seqs):
        p = s.params
        if p.temperature < SAMPLING_EPS:
            continue
        probs = torch.softmax(logits[i] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sp, si = probs.sort(descending=True)
            drop = (sp.cumsum(-1) - sp) >= p.top_p  # keep the smallest prefix whose mass reaches top_p
            sp[drop] = 0
            probs = torch.zeros_like(probs).scatter_(0, si, sp)
        out[i] = int(torch.multinomial(probs, 1, generator=generators[s.id]))
    for s, t in zip(seqs, out):
        c = getattr(s, "constraint", None)
        if c is not None:
            c.advance(t)
    return out


def top_logprobs(logits: torch.Tensor, rows: list[int], ks: list[int]) -> tuple[torch.Tensor, list]:
    """The model's own log-probabilities (log-softmax of the raw logits: before temperature, top_p or a
    grammar's mask, as OpenAI and vLLM report them) of `rows`, and each row's `k` most likely (id, logprob).
    Call it before `sample`, which masks `logits` in place. Returns (logprobs [len(rows), vocab], tops)."""
    lp = torch.log_softmax(logits[rows].float(), dim=-1)
    k = max(ks, default=0)
    tops: list = [[] for _ in rows]
    if k:
        vals, ids = lp.topk(k, dim=-1)
        vals, ids = vals.tolist(), ids.tolist()
        tops = [list(zip(ids[j][:kk], vals[j][:kk])) for j, kk in enumerate(ks)]
    return lp, tops


@torch.no_grad()
def prompt_logprobs(logits: torch.Tensor, ids: list[int], k: int) -> list[tuple[float | None, list]]:
    """Per prompt token: (its logprob given the tokens before it, the k most likely (id, logprob) there).
    `logits`: [len(ids), vocab], position t predicting token t + 1. The first token has nothing before it
    (None, [])."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    out: list[tuple[float | None, list]] = [(None, [])]
    if len(ids) < 2:
        return out
    target = torch.tensor(ids[1:], device=lp.device)
    chosen = lp[:-1].gather(-1, target[:, None])[:, 0].tolist()
    tops = [[] for _ in chosen]
    if k:
        vals, tid = lp[:-1].topk(k, dim=-1)
        tops = [list(zip(a, b)) for a, b in zip(tid.tolist(), vals.tolist())]
    out += list(zip(chosen, tops))
    return out
