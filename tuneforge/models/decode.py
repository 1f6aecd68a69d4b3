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
from dataclasses import dataclass

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
        """Run the prompts of `seqs` together (left-padded); returns the batch and the next-token logits.

        With a prefix cache on the group (`group.prefix_cache`), each row's longest cached prompt prefix for its
        adapter is copied into the row's cache instead of being recomputed: the cache starts with the prefixes
        (left-padded to the longest), the forward runs only the rest of each prompt (left-padded too), and the
        mask has a hole between a short prefix and its row's padded remainder. Keys carry their rotary position,
        so a prefix's KV is the same wherever its columns sit."""
        from transformers import DynamicCache

        device = group.model.device
        pc = getattr(group, "prefix_cache", None)
        hits = pc.lookup(group, seqs, adapters) if pc is not None else [None] * len(seqs)
        plen = [0 if h is None else h.length for h in hits]
        pw = max(plen)
        width = max(len(s.prompt_ids) - n for s, n in zip(seqs, plen))
        pad = group.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), pw + width), dtype=torch.long)
        for i, s in enumerate(seqs):
            rest = s.prompt_ids[plen[i]:]
            ids[i, width - len(rest):] = torch.tensor(rest)
            mask[i, pw - plen[i]:pw] = 1
            mask[i, pw + width - len(rest):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = ((mask.cumsum(-1) - 1).clamp(min=0))[:, pw:]
        cache = DynamicCache(config=group.model.config)
        if pw:
            for layer, (k, v) in enumerate(_stack_prefixes(hits, pw)):
                cache.update(k.to(device), v.to(device), layer)
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


def _stack_prefixes(hits: list, width: int):
    """Per layer, (keys, values) of every row's cached prefix left-padded with zeros to `width` columns."""
    some = next(h for h in hits if h is not None)
    for layer in range(len(some.keys)):
        k0, v0 = some.keys[layer], some.values[layer]
        ks = k0.new_zeros((len(hits), k0.shape[1], width, k0.shape[3]))
        vs = v0.new_zeros((len(hits), v0.shape[1], width, v0.shape[3]))
        for i, h in enumerate(hits):
            if h is not None:
                ks[i, :, width - h.length:] = h.keys[layer][0]
                vs[i, :, width - h.length:] = h.values[layer][0]
        yield ks, vs


@dataclass
class Prefix:
    """One cached prompt prefix of one adapter: its token ids and each layer's keys/values [1, heads, len, dim]."""

    adapter: str
    ids: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    hits: int = 0

    @property
    def length(self) -> int:
        return len(self.ids)


class PrefixCache:
    """Prompt prefixes computed once per adapter and copied into each row that starts with them (vLLM's automatic
    prefix caching, llama.cpp's prompt cache, reduced to whole prefixes).

    Which prefixes: learned from traffic. When a prompt finds no cached prefix, its longest common prefix with
    the adapter's recent prompts (the chat template's system prompt and role header, a client's own system
    prompt, a few-shot block) becomes an entry if it is at least `min_tokens` long; entries are computed by one
    forward of the prefix alone and kept in LRU order, at most `max_entries`. A prefix never covers a whole
    prompt (the last prompt token must run to give the first answer token). `drop(adapter)` forgets an adapter's
    entries when its weights change (an adapter (re)loaded under that name)."""

    def __init__(self, max_entries: int = 32, min_tokens: int = 16, history: int = 8):
        self.max_entries, self.min_tokens, self.history = max_entries, min_tokens, history
        self.entries: dict[tuple[str, tuple[int, ...]], Prefix] = {}
        self.recent: dict[str, list[list[int]]] = {}
        self.stats = {"hits": 0, "misses": 0, "hit_tokens": 0, "built": 0}

    def drop(self, adapter: str) -> None:
        for key in [k for k in self.entries if k[0] == adapter]:
            del self.entries[key]
        self.recent.pop(adapter, None)

    def clear(self) -> None:
        self.entries.clear()
        self.recent.clear()

    def _best(self, adapter: str, ids: list[int]) -> Prefix | None:
        best = None
        for (a, pre), e in self.entries.items():
            if a == adapter and len(pre) < len(ids) and (best is None or len(pre) > best.length) \
                    and tuple(ids[:len(pre)]) == pre:
                best = e
        return best

    def lookup(self, group, seqs: list, adapters: list[str]) -> list[Prefix | None]:
        """Each row's cached prefix (building new entries from shared prefixes first), or None."""
        out: list[Prefix | None] = []
        for s, a in zip(seqs, adapters):
            ids = list(s.prompt_ids)
            best = self._best(a, ids)
            recent = self.recent.setdefault(a, [])
            lcp = max((common_prefix(ids, r) for r in recent), default=0)
            lcp = min(lcp, len(ids) - 1)
            if lcp >= self.min_tokens and lcp >= (best.length if best else 0) + self.min_tokens:
                best = self._build(group, a, ids[:lcp])
            recent.append(ids)
            del recent[:-self.history]
            if best is None:
                self.stats["misses"] += 1
            else:
                best.hits += 1
                self.stats["hits"] += 1
                self.stats["hit_tokens"] += best.length
                self.entries[(a, best.ids)] = self.entries.pop((a, best.ids))  # most recently used last
            out.append(best)
        return out

    @torch.no_grad()
    def _build(self, group, adapter: str, ids: list[int]) -> Prefix:
        from transformers import DynamicCache

        device = group.model.device
        cache = DynamicCache(config=group.model.config)
        t = torch.tensor([ids], dtype=torch.long, device=device)
        group.forward([adapter], input_ids=t, attention_mask=torch.ones_like(t),
                      position_ids=torch.arange(len(ids), device=device)[None], **{cache_kw(group.model): cache})
        e = Prefix(adapter, tuple(ids), [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])
        self.entries[(adapter, e.ids)] = e
        self.stats["built"] += 1
        while len(self.entries) > self.max_entries:
            del self.entries[next(iter(self.entries))]
        return e


def common_prefix(a, b) -> int:
    """How many leading tokens two id sequences share (prefix caches in both engines)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
        g = generators[s.id]  # CPU generators (seeded per request/answer): draw where the generator lives, so
        out[i] = int(torch.multinomial(probs.to(g.device), 1, generator=g))  # CUDA logits work, same seed = same draw
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
