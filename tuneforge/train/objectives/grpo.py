"""GRPO: reinforcement from a grader. For each prompt the model being trained samples a group of answers
(`num_generations`), the grader scores them, and each answer's advantage is its reward minus the group's mean,
over the group's std (group-normalised, as DeepSeekMath's GRPO and TRL's GRPOTrainer). The loss is PPO's
clipped objective per answer token, averaged per answer, plus `beta` x KL to the reference (k3 estimator).

Sampling decodes all prompts x generations of a micro-batch together over one KV cache (`models.decode.Batch`),
with the model in eval mode (no dropout) and under no_grad; the sampling-time log-probabilities of the chosen
tokens are kept as the "old" policy of the ratio, so `epsilon` bounds how far a step's dropout-on forward may
move from what was sampled. Each answer row gets its own torch.Generator seeded from the objective's generator,
which every checkpoint saves: a killed and resumed run samples, grades and steps exactly as an unbroken one.

Units: one step's loss is averaged over its answers (`count` = answers), so metrics are per answer: reward,
reward_std (the group's std), zero_std_groups (share of answers whose group all scored the same: no signal),
completion_length, kl (only with beta > 0: it needs the reference pass), grader_errors (share of answers a
grader could not score: counted and scored 0).

beta defaults to 0.0 (TRL's default since 0.19, after DAPO and Dr. GRPO found the KL term unnecessary with
verifiable rewards): no reference forward pass, so a step costs a third less; the clip and the small LoRA
learning rate keep the policy near its start. Set beta (e.g. 0.04, DeepSeekMath's value) to hold it closer.
Validation: greedy answers to the held-out prompts, val_loss = -mean reward (so best weights and early stopping
follow the grader), val_reward = the mean.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch.utils.checkpoint import checkpoint

from tuneforge import graders
from tuneforge.data.formats import REINFORCEMENT, Sample
from tuneforge.data.load import load_samples
from tuneforge.data.tokenize import render_prompt
from tuneforge.errors import ConfigError, DataError
from tuneforge.models.decode import Batch, sample
from tuneforge.train.loss import CHUNK, fast_path_ok
from tuneforge.train.objectives import MEASURED_ON_PLATEAU, Objective
from tuneforge.train.objectives.sft import holdout

DEFAULT_BETA = 0.0
VAL_BATCH = 16  # held-out prompts decoded together in validation


@dataclass
class Prompt:
    """One RL row ready to sample from: its prompt token ids and the grader's item (every key of the row)."""

    prompt_ids: list[int]
    item: dict
    where: str


@dataclass
class _Seq:
    """A row being decoded (the "seq" `models.decode` expects)."""

    id: int
    prompt_ids: list[int]
    params: SimpleNamespace
    tokens_out: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    finish: str = "length"


class _Policy:
    """The "group" `models.decode.Batch` drives: the model being trained, its tokenizer, a last-position forward."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def forward(self, adapters, **kw) -> torch.Tensor:
        return self.model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen) if isinstance(gen, (list, tuple)) else {gen} if gen is not None else set()
    return ids


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], *, max_tokens: int, temperature: float,
             generators: list[torch.Generator] | None = None) -> list[_Seq]:
    """Sample one answer per prompt row, all rows decoded together over one KV cache; each row keeps its
    tokens (EOS included when it stopped), the sampling-time log-prob of each token and its finish reason.
    temperature 0 = greedy (no generators needed)."""
    group = _Policy(model, tokenizer)
    params = SimpleNamespace(max_tokens=max_tokens, temperature=temperature, top_p=1.0, min_tokens=0)
    seqs = [_Seq(i, ids, params) for i, ids in enumerate(prompts)]
    gens = {s.id: g for s, g in zip(seqs, generators)} if generators is not None else {}
    eos = eos_ids(model, tokenizer)
    batch, logits = Batch.prefill(group, seqs, [None] * len(seqs))
    while True:
        logp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
        toks = sample(logits, batch.seqs, gens, eos)
        keep, nxt = [], []
        for i, (s, t) in enumerate(zip(batch.seqs, toks)):
            s.tokens_out.append(t)
            s.logps.append(float(logp[i, t]))
            if t in eos:
                s.finish = "stop"
            elif len(s.tokens_out) < max_tokens:
                keep.append(i)
                nxt.append(t)
        if not keep:
            return seqs
        batch.last = torch.tensor(toks, dtype=torch.long, device=batch.mask.device)
        batch.filter(keep)
        logits = batch.decode(group)


def completion_text(tokenizer, s: _Seq) -> str:
    """The answer the grader sees: decoded without special tokens, surrounding whitespace stripped."""
    return tokenizer.decode(s.tokens_out, skip_special_tokens=True).strip()


def group_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [prompts, G] → (advantages [prompts, G], group std [prompts]): (r - group mean) / (std + 1e-4),
    std unbiased as in TRL; an all-equal group gets advantage 0 (no signal, no update from it)."""
    mean, std = rewards.mean(1, keepdim=True), rewards.std(1, keepdim=True)
    return (rewards - mean) / (std + 1e-4), std.squeeze(1)


def clipped_loss(logp: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-token PPO-clip loss: -min(ratio A, clip(ratio, 1-eps, 1+eps) A), ratio = exp(logp - old)."""
    ratio = torch.exp(logp - old)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def k3_kl(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate exp(ref - logp) - (ref - logp) - 1 (>= 0; Schulman's k3, as GRPO)."""
    d = ref - logp
    return torch.exp(d) - d - 1


def _chunk_logp(h: torch.Tensor, weight: torch.Tensor, tgt: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = (h @ weight.t()).float() / temperature
    return logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logps(model, batch: dict, temperature: float) -> torch.Tensor:
    """log p(answer token) at temperature for every answer position: [rows, Lc] (0 at padding). The output layer
    runs only at answer positions, in chunks recomputed in backward (the ~49k vocabulary would dominate memory)."""
    device = next(model.parameters()).device
    ids, mask, pos = (batch[k].to(device) for k in ("input_ids", "attention_mask", "position_ids"))
    comp, cmask = batch["completion_ids"].to(device), batch["completion_mask"].to(device).bool()
    lp, lc = batch["prompt_len"], comp.shape[1]
    out = torch.zeros(comp.shape, dtype=torch.float32, device=device)
    if not fast_path_ok(model):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        logits = logits[:, -lc - 1:-1].float() / temperature
        full = logits.gather(-1, comp[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return torch.where(cmask, full, out)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos,
                                 use_cache=False).last_hidden_state
    h = hidden[:, lp - 1:lp - 1 + lc][cmask]
    t = comp[cmask]
    weight = model.get_output_embeddings().weight
    parts = []
    for i in range(0, h.shape[0], CHUNK):
        args = (h[i:i + CHUNK], weight, t[i:i + CHUNK], temperature)
        parts.append(checkpoint(_chunk_logp, *args, use_reentrant=False) if torch.is_grad_enabled()
                     else _chunk_logp(*args))
    return out.masked_scatter(cmask, torch.cat(parts)) if parts else out


class GRPO(Objective):
    name = "grpo"
    count_key = "completions"
    # A tenth of the supervised rate (LoRA on a small base: 2e-4), 4x DPO's: each step learns from one prompt's
    # freshly sampled group, and at DPO's 5e-5 a 40-step SmolLM2 run did not move the held-out grader score
    # (bench/RESULTS.md, issue 22). LoRA needs little capacity for RL and takes ~10x full fine-tuning's rate
    # ("LoRA Without Regret", Schulman et al. 2025); TRL's 1e-6 default is for full fine-tuning.
    learning_rate_scale = 0.1
    learning_rate_scale_reason = "1/10 of the supervised rate for reinforcement from a grader"
    # One pass over the prompts: every visit samples num_generations fresh answers, so a prompt is already seen
    # many ways per pass (the guide's 3-10 passes are for imitation data); validation still stops it sooner.
    cap_epochs = 1
    cap_epochs_reason = "one pass over the prompts (each visit samples num_generations fresh answers)"
    lr_scheduler, lr_scheduler_reason = MEASURED_ON_PLATEAU
    # Sampling temperature by base size. Measured on SmolLM2-135M (bench/rl_signal.py, pick task, 12 prompts x 8
    # answers): at 1.0 the mean reward was 0.031 with 33% of groups scoring unequally (the only ones that teach),
    # at 0.7 0.078 / 67%, at 0.5 0.115 / 75% (greedy: 0.208), and answers were half as long (16 vs 30 tokens),
    # so steps are faster too. Larger bases stay on topic when sampled hot: TRL's 1.0.
    temperatures = ((0.5e9, 0.5, "sampled at 1.0 a base this small is mostly off-topic, so whole groups score 0 "
                                  "alike and teach nothing"),
                    (math.inf, 1.0, "TRL's default: a base this size stays on topic when sampled hot"))
    packing = False  # micro-batches are sampled, not collated

    def __init__(self, cfg):
        super().__init__(cfg)
        self.grader: graders.Grader | None = None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.tokenizer = None
        self.ref = None  # a frozen copy of the starting weights: full fine-tuning with beta > 0 only

    @property
    def beta(self) -> float:
        b = self.cfg.beta
        return DEFAULT_BETA if b is None else float(b)

    # --- rows → items -------------------------------------------------------------------------------
    def load(self, path: str) -> list[Sample]:
        if not self.cfg.grader:
            raise ConfigError("config: objective grpo needs 'grader' (--grader grader.json)")
        graders.load(self.cfg.grader)  # a bad grader fails before the model loads
        bs, g = self.cfg.per_device_train_batch_size, self.cfg.num_generations
        if bs % g:
            near = " or ".join(str(k * g) for k in (bs // g, bs // g + 1) if k)
            raise ConfigError(f"config: per_device_train_batch_size ({bs}) counts sampled answers for objective grpo "
                              f"and must be a multiple of num_generations ({g}), e.g. {near}")
        return load_samples(path, REINFORCEMENT)

    def holdout(self, rows, frac, seed):
        return holdout(rows, frac, seed)

    def encode(self, rows: list[Sample], tokenizer, what: str) -> tuple[list[Prompt], int]:
        room = self.cfg.max_seq_len - self.cfg.max_completion_length
        if room < 1:
            raise ConfigError(f"config: max_seq_len ({self.cfg.max_seq_len}) must exceed max_completion_length "
                              f"({self.cfg.max_completion_length}): the prompt needs room")
        out, truncated = [], 0
        for s in rows:
            ids = tokenizer(render_prompt(s, tokenizer), add_special_tokens=False)["input_ids"]
            truncated += len(ids) > room
            out.append(Prompt(ids[-room:], s.extra.get("item", {}), s.where))
        if not out:
            raise DataError(f"no {what} prompt", field="messages", code="empty")
        return out, truncated

    def data_info(self, items: list[Prompt]) -> dict:
        return {"train_tokens": sum(len(p.prompt_ids) for p in items), "train_prompts": len(items),
                "max_answer_tokens": self.cfg.max_completion_length}

    # --- the run ------------------------------------------------------------------------------------
    def setup(self, p, out, ranks, resume: bool) -> None:
        self.gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + ranks.rank)
        self.tokenizer = p.base.tokenizer
        if self.grader is None:
            self.grader = graders.build(graders.load(self.cfg.grader))
        if self.beta > 0 and not hasattr(p.model, "disable_adapter"):
            self.ref = copy.deepcopy(p.model).eval().requires_grad_(False)

    def _grade(self, texts: list[str], seqs: list[_Seq], items: list[dict]) -> list[graders.Result]:
        samples = [graders.sample_from_text(t, s.finish) for t, s in zip(texts, seqs)]
        return self.grader.grade(samples, items)

    def batch(self, p, items: list[Prompt], model) -> dict:
        cfg, tok, G = self.cfg, p.base.tokenizer, self.cfg.num_generations
        prompts = [it.prompt_ids for it in items for _ in range(G)]
        gens = [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.gen)))
                for _ in prompts]
        was = model.training
        model.eval()
        try:
            seqs = generate(model, tok, prompts, max_tokens=cfg.max_completion_length,
                            temperature=cfg.temperature, generators=gens)
        finally:
            model.train(was)
        texts = [completion_text(tok, s) for s in seqs]
        results = self._grade(texts, seqs, [it.item for it in items for _ in range(G)])
        rewards = torch.tensor([r.score for r in results], dtype=torch.float32).view(len(items), G)
        adv, std = group_advantages(rewards)
        return self._tensors(seqs, tok.pad_token_id or 0) | {
            "advantages": adv.reshape(-1),
            "stats": {"reward": float(rewards.sum()), "reward_std": float(std.sum() * G),
                      "zero_std_groups": float((std == 0).sum() * G),
                      "completion_length": float(sum(len(s.tokens_out) for s in seqs)),
                      "grader_errors": float(sum(bool(r.errors) for r in results))}}

    @staticmethod
    def _tensors(seqs: list[_Seq], pad: int) -> dict:
        """Prompts left-padded to one width, answers right-padded after them (answers start at one column)."""
        lp = max(len(s.prompt_ids) for s in seqs)
        lc = max(len(s.tokens_out) for s in seqs)
        n = len(seqs)
        ids = torch.full((n, lp + lc), pad, dtype=torch.long)
        mask = torch.zeros((n, lp + lc), dtype=torch.long)
        comp = torch.full((n, lc), pad, dtype=torch.long)
        cmask = torch.zeros((n, lc), dtype=torch.long)
        old = torch.zeros((n, lc), dtype=torch.float32)
        for i, s in enumerate(seqs):
            k, m = len(s.prompt_ids), len(s.tokens_out)
            ids[i, lp - k:lp] = torch.tensor(s.prompt_ids)
            ids[i, lp:lp + m] = torch.tensor(s.tokens_out)
            mask[i, lp - k:lp + m] = 1
            comp[i, :m] = torch.tensor(s.tokens_out)
            cmask[i, :m] = 1
            old[i, :m] = torch.tensor(s.logps)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "completion_ids": comp,
                "completion_mask": cmask, "old_logps": old, "prompt_len": lp}

    @classmethod
    def items_per_micro_batch(cls, cfg) -> int:
        """per_device_train_batch_size counts sampled answers, as in TRL's GRPOConfig (and ms-swift): a
        micro-batch is batch / num_generations prompts x num_generations answers, so the default (8 answers, 8
        per prompt) is one prompt per micro-batch. Counting prompts instead put 64 SmolLM2 sequences in one
        forward (killed at 24 GB on CPU, ~3 min per step)."""
        return max(1, cfg.per_device_train_batch_size // cfg.num_generations)

    def count(self, batch) -> int:
        return int(batch["completion_ids"].shape[0])

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def loss(self, model, batch):
        cfg = self.cfg
        logp = token_logps(model, batch, cfg.temperature)
        device = logp.device
        cmask = batch["completion_mask"].to(device).float()
        adv = batch["advantages"].to(device)[:, None]
        per_tok = clipped_loss(logp, batch["old_logps"].to(device), adv, cfg.epsilon)
        metrics = dict(batch["stats"])
        lengths = cmask.sum(1).clamp(min=1)
        if self.beta > 0:
            with torch.no_grad():
                if self.ref is not None:
                    ref = token_logps(self.ref, batch, cfg.temperature)
                else:
                    with model.disable_adapter():
                        ref = token_logps(model, batch, cfg.temperature)
            kl = k3_kl(logp, ref)
            per_tok = per_tok + self.beta * kl
            metrics["kl"] = float(((kl.detach() * cmask).sum(1) / lengths).sum())
        per_seq = (per_tok * cmask).sum(1) / lengths
        return per_seq.sum(), metrics

    def val_batches(self, p) -> list:
        return [p.val[i:i + VAL_BATCH] for i in range(0, len(p.val), VAL_BATCH)]

    def validate(self, model, forward, batches) -> dict[str, float]:
        was = model.training
        model.eval()
        scores: list[float] = []
        try:
            for chunk in batches:
                seqs = generate(model, self.tokenizer, [it.prompt_ids for it in chunk],
                                max_tokens=self.cfg.max_completion_length, temperature=0.0)
                texts = [completion_text(self.tokenizer, s) for s in seqs]
                scores += [r.score for r in self._grade(texts, seqs, [it.item for it in chunk])]
        finally:
            model.train(was)
        mean = sum(scores) / max(len(scores), 1)
        return {"val_loss": -mean, "val_reward": mean}

    def state_dict(self):
        return {"sampler": self.gen.get_state()}

    def load_state_dict(self, state):
        if state.get("sampler") is not None:
            self.gen.set_state(state["sampler"])

