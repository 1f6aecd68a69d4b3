"""The DPO family: preference pairs → a loss that raises the preferred answer's log-probability relative to the
non-preferred one (and, for DPO/IPO, relative to a frozen reference).

Losses are pure functions of per-answer log-probabilities (`LOSSES`), so they are tested against hand-computed
values. `loss_type` (config): `sigmoid` = DPO (Rafailov et al. 2023, default), `ipo` (Azar et al. 2023: squared,
on per-token averages; does not push margins to infinity on separable data), and the reference-free `simpo`
(Meng et al. 2024: length-normalised, target margin `simpo_gamma`) and `orpo` (Hong et al. 2024: NLL on the
preferred answer plus an odds-ratio term), which need no reference pass at all.

The reference: with LoRA/QLoRA it is the same model with its adapter disabled (peft's `disable_adapter()`: no
second model in memory, one extra no-grad forward); with full fine-tuning, or when training continues from a
parent run (`--from`: the reference is the parent, not the bare base), reference log-probs are computed once
before the first step and cached in the run directory (`ref_logps.safetensors`, written atomically, reused on
resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge import methods
from tuneforge.data.tokenize import IGNORE, EncodedPair
from tuneforge.train.objectives import MEASURED_ON_PLATEAU, Objective

LOSS_TYPES = ("sigmoid", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
# beta's meaning differs per loss: DPO/IPO's KL strength, SimPO's reward scale, ORPO's odds-ratio weight
DEFAULT_BETA = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0, "orpo": 0.1}
CHUNK = 1024  # answer positions per output-layer chunk (as train.loss)


def default_beta(loss_type: str) -> float:
    return DEFAULT_BETA[loss_type]


@dataclass
class PairLoss:
    """Per-pair loss and implicit rewards (what the metrics report: margin = chosen - rejected reward)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


# --- the losses: pure functions of summed answer log-probs (pc, pr), reference log-probs (rc, rr) and answer
# token counts (lc, lr); every tensor has one entry per pair -------------------------------------------------

def sigmoid_loss(pc, pr, rc, rr, lc, lr, *, beta: float, gamma: float = 0.0) -> PairLoss:
    """DPO: -log σ(β[(pc - rc) - (pr - rr)])."""
    logits = (pc - rc) - (pr - rr)
    return PairLoss(-F.logsigmoid(beta * logits), beta * (pc - rc).detach(), beta * (pr - rr).detach())


def ipo_loss(pc, pr, rc, rr, lc, lr, *, beta: float, gamma: float = 0.0) -> PairLoss:
    """IPO: ((ac - arc) - (ar - arr) - 1/(2β))² on per-token average log-probs (as in TRL)."""
    ac, ar, arc, arr = pc / lc, pr / lr, rc / lc, rr / lr
    logits = (ac - arc) - (ar - arr)
    return PairLoss((logits - 1 / (2 * beta)) ** 2, beta * (ac - arc).detach(), beta * (ar - arr).detach())


def simpo_loss(pc, pr, rc, rr, lc, lr, *, beta: float, gamma: float = 0.5) -> PairLoss:
    """SimPO: -log σ(β(pc/lc - pr/lr) - γ); no reference."""
    ac, ar = pc / lc, pr / lr
    return PairLoss(-F.logsigmoid(beta * (ac - ar) - gamma), beta * ac.detach(), beta * ar.detach())


def orpo_loss(pc, pr, rc, rr, lc, lr, *, beta: float, gamma: float = 0.0) -> PairLoss:
    """ORPO: -pc/lc - β log σ(log odds(ac) - log odds(ar)), odds(p) = p / (1 - p) of the per-token mean; no
    reference."""
    ac, ar = pc / lc, pr / lr
    log1m = lambda a: torch.log1p(-torch.exp(a).clamp(max=1 - 1e-7))  # noqa: E731 - log(1 - p), p = e^a < 1
    log_odds = (ac - ar) - (log1m(ac) - log1m(ar))
    return PairLoss(-ac - beta * F.logsigmoid(log_odds), beta * ac.detach(), beta * ar.detach())


LOSSES: dict[str, Callable[..., PairLoss]] = {"sigmoid": sigmoid_loss, "ipo": ipo_loss, "simpo": simpo_loss,
                                               "orpo": orpo_loss}


def pair_loss(loss_type: str, pc, pr, rc, rr, lc, lr, *, beta: float | None, gamma: float = 0.5) -> PairLoss:
    """The configured loss; `beta` None → the loss's default. Reference-free losses ignore rc/rr (may be None)."""
    b = default_beta(loss_type) if beta is None else beta
    if loss_type in REFERENCE_FREE:
        rc = rr = torch.zeros_like(pc)
    return LOSSES[loss_type](pc, pr, rc, rr, lc.to(pc.dtype), lr.to(pc.dtype), beta=b, gamma=gamma)


# --- log-probabilities of answers --------------------------------------------------------------------------------

def collate_pairs(pairs: list[EncodedPair], *, packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    """One micro-batch of 2n sequences (chosen_0, rejected_0, chosen_1, ...) as train.packing builds it, plus
    `seq`: the sequence index of every target position (-1 where nothing is scored)."""
    from tuneforge.train.packing import collate

    seqs = [e for p in pairs for e in (p.chosen, p.rejected)]
    batch = collate(seqs, packing=packing, pad_id=pad_id)
    seq = torch.full_like(batch["targets"], -1)
    if packing:
        start = 0
        for i, e in enumerate(seqs):
            seq[0, start:start + len(e.input_ids)] = i
            start += len(e.input_ids)
    else:
        seq[:] = torch.arange(len(seqs)).unsqueeze(1)
    batch["seq"] = torch.where(batch["targets"] != IGNORE, seq, torch.full_like(seq, -1))
    batch["n_seqs"] = torch.tensor(len(seqs))
    return batch


def _chunk_logp(h: torch.Tensor, weight: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy((h @ weight.t()).float(), tgt, reduction="none")


def answer_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each sequence's answer tokens, answer token count), one entry per sequence.

    Like train.loss: the output layer runs only at answer positions, in chunks, recomputed in backward."""
    from tuneforge.train.loss import fast_path_ok

    device = next(model.parameters()).device
    tgt = batch["targets"].to(device)
    seq = batch["seq"].to(device).reshape(-1)
    sup = seq >= 0
    n = int(batch["n_seqs"])
    kw = dict(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
              attention_mask=None if batch["attention_mask"] is None else batch["attention_mask"].to(device),
              use_cache=False)
    t = tgt.reshape(-1)[sup]
    if not fast_path_ok(model):
        logits = model(**kw).logits[:, -tgt.shape[1]:]
        tok = -F.cross_entropy(logits.float().reshape(-1, logits.shape[-1])[sup], t, reduction="none")
    else:
        hidden = model.get_decoder()(**kw).last_hidden_state
        h = hidden.reshape(-1, hidden.shape[-1])[sup]
        weight = model.get_output_embeddings().weight
        parts = []
        for i in range(0, h.shape[0], CHUNK):
            hc, tc = h[i:i + CHUNK], t[i:i + CHUNK]
            if h.shape[0] > CHUNK and torch.is_grad_enabled():
                parts.append(checkpoint(_chunk_logp, hc, weight, tc, use_reentrant=False))
            else:
                parts.append(_chunk_logp(hc, weight, tc))
        tok = torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)
    ids = seq[sup]
    sums = torch.zeros(n, dtype=torch.float32, device=device).index_add(0, ids, tok)
    counts = torch.zeros(n, dtype=torch.long, device=device).index_add(0, ids, torch.ones_like(ids))
    return sums, counts


def split_sides(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved (chosen_0, rejected_0, chosen_1, ...) → (chosen, rejected)."""
    return x[0::2], x[1::2]


def reference_logps_adapter_disabled(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference's summed answer log-probs: the same model with its LoRA adapter switched off, no gradients
    (and no dropout: the adapter path, where peft's dropout lives, is off)."""
    with torch.no_grad(), model.disable_adapter():
        return answer_logps(model, batch)[0]


def metrics_of(pl: PairLoss, pc: torch.Tensor, pr: torch.Tensor, lc: torch.Tensor | None = None,
               rc: torch.Tensor | None = None) -> dict[str, float]:
    """Sums over the pairs (the caller divides by the pairs of its window): loss, reward margin, accuracy (the
    preferred answer's implicit reward is higher), chosen/rejected log-probs; with the chosen answers' token counts
    `lc`, their per-token log-prob (and the reference's, with `rc`) for the collapse check (`collapse_warning`)."""
    margin = pl.chosen_rewards - pl.rejected_rewards
    m = {"loss": float(pl.losses.detach().sum()), "reward_margin": float(margin.sum()),
         "accuracy": float((margin > 0).float().sum()), "chosen_reward": float(pl.chosen_rewards.sum()),
         "rejected_reward": float(pl.rejected_rewards.sum()), "logp_chosen": float(pc.detach().sum()),
         "logp_rejected": float(pr.detach().sum())}
    if lc is not None:
        n = lc.to(pc.dtype).clamp(min=1)
        m["logp_chosen_tok"] = float((pc.detach() / n).sum())
        if rc is not None:
            m["ref_logp_chosen_tok"] = float((rc.detach() / n).sum())
    return m


COLLAPSE_NATS_PER_TOKEN = 1.0  # held-out preferred answers this much less likely per token = degenerating


def collapse_warning(history: list[dict]) -> str | None:
    """A preference loss can reach ~0 by pushing *both* answers down: validation loss and accuracy then look
    perfect while greedy answers degenerate (measured on SmolLM2 at lr 1e-3: perplexity of the preferred answers
    11.6 -> 45,759, bench/RESULTS.md). The visible sign is the held-out preferred answers' per-token log-prob
    falling well below the reference's (or, for reference-free losses, below its first validation value)."""
    rows = [r for r in history if "val_logp_chosen_tok" in r]
    if not rows:
        return None
    now = rows[-1]
    base = now.get("val_ref_logp_chosen_tok", rows[0]["val_logp_chosen_tok"])
    drop = base - now["val_logp_chosen_tok"]
    if drop <= COLLAPSE_NATS_PER_TOKEN:
        return None
    return (f"held-out preferred answers are {drop:.1f} nats per token less likely than at the start (step "
            f"{now['step']}): the preference loss is improving by pushing both answers down, which degrades "
            "generation; lower --learning_rate or raise --beta, and check `tuneforge eval` perplexity")


def mean_metrics(sums: dict[str, float], n_pairs: int) -> dict[str, float]:
    return {k: v / max(n_pairs, 1) for k, v in sums.items()} if n_pairs else {k: math.nan for k in sums}


# --- the objective ------------------------------------------------------------------------------------------------

VAL_BATCH_PAIRS = 8  # validation pairs per forward pass (16 sequences)
REF_FILE = "ref_logps.safetensors"  # full fine-tune / --from: the reference's answer log-probs, per split


@dataclass
class PairItem:
    """One encoded pair and where it sits in its set (the reference cache is indexed by it)."""

    pair: EncodedPair
    split: str  # "train" | "val"
    index: int


def reference_mode(cfg) -> str:
    """none (reference-free loss) | adapter (LoRA/QLoRA: the base under the adapter, on the fly) | cached (full
    fine-tune, prompt tuning, or --from a parent run: one pass with the starting weights before the first step)."""
    if cfg.loss_type in REFERENCE_FREE:
        return "none"
    if methods.get(cfg.method).lora_shaped and not cfg.from_run:
        return "adapter"
    return "cached"


class DPO(Objective):
    """Preference pairs → the configured DPO-family loss; the step is normalised by pairs."""

    name = "dpo"
    count_key = "pairs"
    # Measured on SmolLM2-135M (bench/RESULTS.md, issue 22): at a supervised LoRA rate (1e-3) the pairs are
    # separated within 24 steps but the preferred answer's own likelihood collapses (held-out perplexity 11.6 →
    # 45,759, greedy answers degenerate); 5e-5 was healthy (11.6 → 3.56). Preference recipes train 10-100x below
    # SFT (TRL's DPO default 1e-6 for full fine-tuning, LoRA recipes 5e-6..5e-5). 1/40 of LoRA's 2e-3 = 5e-5.
    learning_rate_scale = 0.025
    learning_rate_scale_reason = ("1/40 of the supervised rate for preference training: at the supervised rate "
                                  "the preferred answers' own likelihood collapses")
    lr_scheduler, lr_scheduler_reason = MEASURED_ON_PLATEAU
    packing = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.ref: dict[str, torch.Tensor] = {}  # "train_chosen"... → cached reference log-probs (mode cached)

    # rows → items
    def load(self, path: str) -> list:
        from tuneforge.data.formats import Preference
        from tuneforge.data.load import load_samples
        from tuneforge.errors import DataError

        rows = load_samples(path)
        bad = next((s for s in rows if not isinstance(s, Preference)), None)
        if bad is not None:
            p, _, line = bad.where.rpartition(":")
            raise DataError(f"objective dpo needs preference rows ({{\"input\", \"preferred_output\", "
                            f"\"non_preferred_output\"}} or {{\"prompt\", \"chosen\", \"rejected\"}}), got a "
                            f"{bad.format} row", path=p, line=int(line) if line.isdigit() else None,
                            code="unknown_format")
        return rows

    def holdout(self, rows, frac, seed):
        from tuneforge.train.objectives.sft import holdout
        return holdout(rows, frac, seed)  # near_key of a Preference is its prompt: a prompt's pairs stay together

    def encode(self, rows, tokenizer, what: str):
        from tuneforge.data.tokenize import encode_preference
        from tuneforge.errors import DataError

        split = "val" if what == "validation" else "train"
        out, truncated = [], 0
        for s in rows:
            e = encode_preference(s, tokenizer, max_seq_len=self.cfg.max_seq_len)
            truncated += e.truncated
            if e.supervised:
                out.append(PairItem(e, split, len(out)))
        if not out:
            raise DataError(f"no {what} pair has both answers left after truncation to max_seq_len="
                            f"{self.cfg.max_seq_len}", path=rows[0].where.rsplit(":", 1)[0] if rows else "",
                            field="max_seq_len", code="empty")
        return out, truncated

    def data_info(self, items) -> dict:
        return {"train_pairs": len(items),
                "train_tokens": sum(len(i.pair.chosen.input_ids) + len(i.pair.rejected.input_ids) for i in items),
                "train_supervised_tokens": sum(i.pair.chosen.n_supervised + i.pair.rejected.n_supervised
                                               for i in items),
                "max_answer_tokens": max(i.pair.chosen.n_supervised for i in items),
                "reference": reference_mode(self.cfg)}

    # the run
    def setup(self, p, out, ranks, resume: bool) -> None:
        if reference_mode(p.cfg) != "cached":
            return
        from safetensors.torch import load_file, save_file

        path = out / REF_FILE
        sizes = {"train": len(p.train), "val": len(p.val)}
        if path.is_file():  # a resumed run: the reference of the starting weights, as computed the first time
            self.ref = load_file(str(path))
            if all(self.ref.get(f"{s}_chosen", torch.zeros(0)).numel() == n for s, n in sizes.items()):
                return
        model, was = p.model, p.model.training
        model.eval()
        ref: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for split, items in (("train", p.train), ("val", p.val)):
                vals = []
                for i in range(0, len(items), VAL_BATCH_PAIRS):
                    b = collate_pairs([it.pair for it in items[i:i + VAL_BATCH_PAIRS]], packing=p.cfg.packing,
                                      pad_id=p.base.tokenizer.pad_token_id)
                    vals.append(answer_logps(model, b)[0].cpu())
                both = torch.cat(vals) if vals else torch.zeros(0)
                ref[f"{split}_chosen"], ref[f"{split}_rejected"] = both[0::2].contiguous(), both[1::2].contiguous()
        model.train(was)
        self.ref = ref
        if ranks.main:  # temp file + rename: a kill leaves no half-written cache
            tmp = path.with_name(f".tmp-{path.name}")
            save_file(ref, str(tmp))
            tmp.replace(path)

    def _batch(self, items: list[PairItem], packing: bool, pad_id: int) -> dict:
        b = collate_pairs([it.pair for it in items], packing=packing, pad_id=pad_id)
        if self.ref:
            b["ref_chosen"] = torch.stack([self.ref[f"{it.split}_chosen"][it.index] for it in items])
            b["ref_rejected"] = torch.stack([self.ref[f"{it.split}_rejected"][it.index] for it in items])
        return b

    def batch(self, p, items, model) -> dict:
        return self._batch(items, p.cfg.packing, p.base.tokenizer.pad_token_id)

    def count(self, batch) -> int:
        return int(batch["n_seqs"]) // 2

    def tokens(self, batch) -> int:
        from tuneforge.train.loss import input_tokens
        return input_tokens(batch)

    def loss(self, model, batch):
        cfg = self.cfg
        sums, counts = answer_logps(model, batch)
        pc, pr = split_sides(sums)
        lc, lr = split_sides(counts)
        mode = reference_mode(cfg)
        if mode == "adapter":
            rc, rr = split_sides(reference_logps_adapter_disabled(model, batch))
        elif mode == "cached":
            rc, rr = batch["ref_chosen"].to(pc.device), batch["ref_rejected"].to(pc.device)
        else:
            rc = rr = None
        pl = pair_loss(cfg.loss_type, pc, pr, rc, rr, lc, lr, beta=cfg.beta, gamma=cfg.simpo_gamma)
        m = metrics_of(pl, pc, pr, lc, rc)
        del m["loss"]
        return pl.losses.sum(), m

    def val_batches(self, p) -> list:
        return [self._batch(p.val[i:i + VAL_BATCH_PAIRS], p.cfg.packing, p.base.tokenizer.pad_token_id)
                for i in range(0, len(p.val), VAL_BATCH_PAIRS)]

    def validate(self, model, forward, batches) -> dict[str, float]:
        """val_loss (early stopping, best weights) = the mean preference loss; plus held-out preference accuracy
        and reward margin."""
        was = model.training
        model.eval()
        tot, n, sums = 0.0, 0, {}
        with torch.no_grad():
            for b in batches:
                s, m = forward(b)
                tot, n = tot + float(s), n + self.count(b)
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
        model.train(was)
        out = {"val_loss": tot / max(n, 1), "val_accuracy": sums.get("accuracy", 0.0) / max(n, 1),
               "val_reward_margin": sums.get("reward_margin", 0.0) / max(n, 1)}
        for k in ("logp_chosen_tok", "ref_logp_chosen_tok"):
            if k in sums:
                out[f"val_{k}"] = sums[k] / max(n, 1)
        return out

    def health(self, history: list[dict]) -> str | None:
        return collapse_warning(history)
