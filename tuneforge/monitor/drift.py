"""Drift: do production requests still look like the run's training data, and do its answers still look right?

    tuneforge monitor drift --run runs/sql [--db URL] [--since 24h] [--model NAME] [--json]

compares the request log (answered requests of the model the run is served as; default: the run's directory
name, as `tuneforge serve RUN` names it) with the training data recorded in the run's data.json. Every
signal prints its statistic, the threshold it is judged by and a verdict; the exit code is 1 when any signal
finds drift, 0 when none does, 2 on bad input. Each check is stored in the `drift_checks` table (the dashboard
shows them), and `tuneforge serve --drift-interval S` runs the same check on a schedule and exports it as
Prometheus gauges.

Input side (production prompts vs training prompts):
- `prompt_length` — prompt tokens as the model sees them (chat template applied). Drift when the KS test
  rejects equal distributions (p < {KS_P}) AND the population stability index says the shift is large (PSI > {PSI_MAX},
  the usual "significant change" cut-off; 0.1–0.2 is "moderate"; {PSI_BINS} quantile bins of the training lengths,
  plus a bin on each side for lengths training never had). Both, because with thousands of requests KS
  flags differences too small to matter, and with a few dozen PSI alone is noisy: its expected value for two
  samples of one distribution is about (bins − 1)(1/n₁ + 1/n₂), 0.3 for 30 requests against 300 examples.
- `new_token_rate` — share of production prompt tokens that never occur in the training prompts (words the
  tune never saw). Judged against the same rate measured inside the training data ({NEW_TOKEN_FOLDS}-fold: each fold against
  the others' vocabulary), so a naturally diverse dataset does not alarm: drift when production exceeds it by
  more than {NEW_TOKEN_MARGIN} (at 0.05: one token in twenty newly unseen).
- `prompt_embedding` — the served model's own view: each prompt's last hidden state, mean-pooled over its
  tokens (no other model needed). Maximum mean discrepancy with a Gaussian kernel (median-distance bandwidth)
  between up to {EMBED_SAMPLE} training and {EMBED_SAMPLE} production prompts; its p-value comes from {PERMUTATIONS} label
  permutations, so it is exact whatever the embedding geometry. Drift when p < {MMD_P}.
Output side:
- `completion_length` — generated tokens per answer vs the training answers' lengths (same KS + PSI rule):
  a tuned model that starts rambling or answering in one word has drifted even if prompts have not.
- `empty_or_truncated` — answers that are empty or stopped by max_tokens instead of ending: drift when more
  than {BAD_ANSWER_RATE:.0%} of answers are (a tuned model ends its answers; training answers all end).
- `feedback_score` — mean feedback score of the window vs the feedback before it (or, with no earlier
  feedback, the window's later half vs its earlier half). Drift when it fell by more than {FEEDBACK_DROP} (on the 0–1 scale)
  and a one-sided Mann–Whitney test says the fall is real (p < {FEEDBACK_P}); needs {MIN_FEEDBACK} ratings on each side.
A signal with too little data (fewer than {MIN_REQUESTS} requests, or content logged as hashes for the token and
embedding signals) is reported as n/a and does not count. Six tests at 1% each: expect a false alarm on
roughly one check in twenty on unchanged traffic; a signal that stays red over several checks is the one to act on.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Boolean, Float, Integer, String, Text, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db import TableBase
from tuneforge.errors import TuneforgeError
from tuneforge.ids import new_id
from tuneforge.monitor import query
from tuneforge.monitor.requests import prompt_text

KS_P = 0.01
PSI_MAX = 0.2
PSI_BINS = 10
NEW_TOKEN_MARGIN = 0.05
NEW_TOKEN_FOLDS = 5
MMD_P = 0.01
EMBED_SAMPLE = 200
PERMUTATIONS = 500
BAD_ANSWER_RATE = 0.10
FEEDBACK_DROP = 0.2
FEEDBACK_P = 0.01
MIN_REQUESTS = 20
MIN_FEEDBACK = 10
EMBED_MAX_TOKENS = 512
# the thresholds above are the ones the docstring states: it is filled from them, so the two cannot disagree
__doc__ = __doc__.format(**{k: v for k, v in globals().items() if k.isupper()})


class DriftCheckRow(TableBase):
    """One drift check (table `drift_checks`): its window, verdict and every signal as JSON."""

    __tablename__ = "drift_checks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    run: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(256), index=True)
    since: Mapped[float | None] = mapped_column(Float)
    until: Mapped[float] = mapped_column(Float)
    n_requests: Mapped[int] = mapped_column(Integer)
    drift: Mapped[bool] = mapped_column(Boolean)
    signals: Mapped[str] = mapped_column(Text)  # JSON list of Signal dicts


@dataclass
class Signal:
    name: str
    side: str  # input | output
    statistic: float | None  # the number the verdict reads (PSI, rate, MMD², drop in mean score)
    threshold: str  # the rule, in words
    drift: bool | None  # None: not computed (see note)
    p_value: float | None = None
    detail: dict = field(default_factory=dict)
    note: str = ""

    @property
    def verdict(self) -> str:
        return "n/a" if self.drift is None else "DRIFT" if self.drift else "ok"


@dataclass
class DriftReport:
    run: str
    model: str
    since: float | None
    until: float
    n_requests: int
    n_reference: int
    signals: list[Signal]
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def drift(self) -> bool:
        return any(s.drift for s in self.signals)

    def to_dict(self) -> dict:
        return {"run": self.run, "model": self.model, "since": query.iso(self.since), "until": query.iso(self.until),
                "created": query.iso(self.created), "n_requests": self.n_requests,
                "n_reference": self.n_reference, "drift": self.drift, "notes": self.notes,
                "signals": [{**asdict(s), "verdict": s.verdict} for s in self.signals]}

    def render(self) -> str:
        head = (f"drift: {self.model} ({self.n_requests} requests {_window(self.since, self.until)}) vs the "
                f"training data of {self.run} ({self.n_reference} examples)")
        rows = [("signal", "side", "statistic", "p", "threshold", "verdict")]
        for s in self.signals:
            rows.append((s.name, s.side, _fmt(s.statistic), _fmt(s.p_value), s.threshold,
                         s.verdict + (f" ({s.note})" if s.note else "")))
        widths = [max(len(r[i]) for r in rows[:]) for i in range(5)]
        lines = [head, ""] + ["  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        for s in self.signals:
            extra = _detail_line(s)
            if extra:
                lines.append(f"  {s.name}: {extra}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append("DRIFT FOUND: " + ", ".join(s.name for s in self.signals if s.drift) if self.drift
                     else "no drift found")
        return "\n".join(lines)


def _window(since: float | None, until: float) -> str:
    return f"from {query.iso(since)} to {query.iso(until)}" if since else f"up to {query.iso(until)}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.2e}"
        return f"{v:.4f}"
    return str(v)


def _detail_line(s: Signal) -> str:
    d = s.detail
    if s.name in ("prompt_length", "completion_length") and "reference_mean" in d:
        return (f"mean {d['production_mean']:.1f} vs {d['reference_mean']:.1f} tokens (KS D={d['ks_statistic']:.3f}, "
                f"p={d['ks_p']:.2g}; PSI={d['psi']:.3f})")
    if s.name == "new_token_rate" and "baseline" in d:
        seen = ", ".join(repr(t) for t in d.get("top_new_tokens", [])[:8])
        return f"{d['rate']:.3f} vs {d['baseline']:.3f} inside the training data" + (f"; new: {seen}" if seen else "")
    if s.name == "empty_or_truncated" and "empty" in d:
        return f"{d['empty']} empty, {d['truncated']} truncated of {d['n']}"
    if s.name == "feedback_score" and "current_mean" in d:
        return (f"mean {d['current_mean']:.2f} (n={d['n_current']}) vs {d['reference_mean']:.2f} "
                f"(n={d['n_reference']}, {d['reference']})")
    return ""


# --- statistics -----------------------------------------------------------------------------------------------
def psi(reference, production, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins (ties merged), plus one bin below the
    reference's minimum and one above its maximum (production beyond anything seen in training must count;
    discrete lengths would otherwise fold it into the top bin). Empty bins count as half an observation."""
    ref, prod = np.asarray(reference, dtype=float), np.asarray(production, dtype=float)
    q = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    edges = np.concatenate([[q[0]], q[1:-1], [np.nextafter(q[-1], np.inf)]])
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    p = np.bincount(np.searchsorted(edges, prod, side="right"), minlength=len(edges) + 1) / len(prod)
    r, p = np.maximum(r, 0.5 / len(ref)), np.maximum(p, 0.5 / len(prod))
    return float(np.sum((p - r) * np.log(p / r)))


def length_signal(name: str, side: str, reference: list[float], production: list[float]) -> Signal:
    """KS test AND PSI on two samples of lengths."""
    from scipy.stats import ks_2samp

    rule = f"KS p < {KS_P} and PSI > {PSI_MAX}"
    if len(production) < MIN_REQUESTS or len(reference) < MIN_REQUESTS:
        return Signal(name, side, None, rule, None,
                      note=f"needs {MIN_REQUESTS}+ on each side ({len(reference)} ref, {len(production)} prod)")
    ks = ks_2samp(reference, production)
    value = psi(reference, production)
    drift = bool(ks.pvalue < KS_P and value > PSI_MAX)
    return Signal(name, side, value, rule, drift, p_value=float(ks.pvalue),
                  detail={"psi": value, "ks_statistic": float(ks.statistic), "ks_p": float(ks.pvalue),
                          "reference_mean": float(np.mean(reference)), "production_mean": float(np.mean(production)),
                          "n_reference": len(reference), "n_production": len(production)})


def new_token_rate(ref_ids: list[list[int]], prod_ids: list[list[int]], decode=None, seed: int = 0) -> Signal:
    rule = f"rate > training's own + {NEW_TOKEN_MARGIN}"
    if len(prod_ids) < MIN_REQUESTS or len(ref_ids) < NEW_TOKEN_FOLDS * 2:
        return Signal("new_token_rate", "input", None, rule, None,
                      note=f"needs {MIN_REQUESTS}+ logged prompts with content ({len(prod_ids)} here)")
    order = list(range(len(ref_ids)))
    random.Random(seed).shuffle(order)
    new = total = 0
    for k in range(NEW_TOKEN_FOLDS):
        held = order[k::NEW_TOKEN_FOLDS]
        held_set = set(held)
        vocab = {t for i in order if i not in held_set for t in ref_ids[i]}
        for i in held:
            new += sum(t not in vocab for t in ref_ids[i])
            total += len(ref_ids[i])
    baseline = new / max(total, 1)
    vocab = {t for ids in ref_ids for t in ids}
    unseen: dict[int, int] = {}
    n_tok = 0
    for ids in prod_ids:
        n_tok += len(ids)
        for t in ids:
            if t not in vocab:
                unseen[t] = unseen.get(t, 0) + 1
    rate = sum(unseen.values()) / max(n_tok, 1)
    top = sorted(unseen, key=lambda t: -unseen[t])[:10]
    return Signal("new_token_rate", "input", rate, rule, bool(rate > baseline + NEW_TOKEN_MARGIN),
                  detail={"rate": rate, "baseline": baseline, "production_tokens": n_tok,
                          "distinct_new_tokens": len(unseen),
                          "top_new_tokens": [decode([t]) if decode else t for t in top]})


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = PERMUTATIONS,
                         seed: int = 0) -> tuple[float, float]:
    """(MMD², permutation p-value) with a Gaussian kernel. Features are standardised and the bandwidth set
    (median squared distance) on the pooled sample, which does not depend on the labels: the test stays exact."""
    z = np.vstack([x, y]).astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    n, nx = len(z), len(x)
    med = float(np.median(d2[np.triu_indices(n, 1)]))
    k = np.exp(-d2 / max(med, 1e-12))
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, permutations + 1))
    labels[:nx, 0] = 1
    for j in range(1, permutations + 1):
        labels[rng.permutation(n)[:nx], j] = 1
    a = labels / nx - (1 - labels) / (n - nx)  # MMD² (biased) = aᵀ K a
    stats = np.einsum("ij,ij->j", a, k @ a)
    observed = float(stats[0])
    p = float((1 + np.sum(stats[1:] >= observed - 1e-12)) / (1 + permutations))
    return observed, p


def embedding_signal(ref_emb: np.ndarray | None, prod_emb: np.ndarray | None, seed: int = 0) -> Signal:
    rule = f"MMD permutation p < {MMD_P}"
    if ref_emb is None or prod_emb is None or len(prod_emb) < MIN_REQUESTS or len(ref_emb) < MIN_REQUESTS:
        n = 0 if prod_emb is None else len(prod_emb)
        return Signal("prompt_embedding", "input", None, rule, None,
                      note=f"needs {MIN_REQUESTS}+ logged prompts with content ({n} here)")
    mmd2, p = mmd_permutation_test(ref_emb, prod_emb, seed=seed)
    return Signal("prompt_embedding", "input", mmd2, rule, bool(p < MMD_P), p_value=p,
                  detail={"mmd2": mmd2, "n_reference": len(ref_emb), "n_production": len(prod_emb),
                          "permutations": PERMUTATIONS})


def bad_answer_signal(rows: list[dict]) -> Signal:
    rule = f"rate > {BAD_ANSWER_RATE}"
    if len(rows) < MIN_REQUESTS:
        return Signal("empty_or_truncated", "output", None, rule, None,
                      note=f"needs {MIN_REQUESTS}+ requests ({len(rows)} here)")
    empty = sum(1 for r in rows if r["n_choices"] and r["completion_chars"] == 0)
    truncated = sum(1 for r in rows if r["finish_reason"] == "length")
    bad = sum(1 for r in rows if (r["n_choices"] and r["completion_chars"] == 0) or r["finish_reason"] == "length")
    rate = bad / len(rows)
    return Signal("empty_or_truncated", "output", rate, rule, bool(rate > BAD_ANSWER_RATE),
                  detail={"empty": empty, "truncated": truncated, "n": len(rows), "rate": rate})


def feedback_signal(before: list[dict], current: list[dict]) -> Signal:
    from scipy.stats import mannwhitneyu

    rule = f"mean fell > {FEEDBACK_DROP} and Mann-Whitney p < {FEEDBACK_P}"
    if len(before) >= MIN_FEEDBACK:
        ref, cur, what = before, current, "feedback before the window"
    else:
        half = len(current) // 2
        ref, cur, what = current[:half], current[half:], "the window's earlier half"
    if len(ref) < MIN_FEEDBACK or len(cur) < MIN_FEEDBACK:
        return Signal("feedback_score", "output", None, rule, None,
                      note=f"needs {MIN_FEEDBACK}+ ratings on each side ({len(ref)} and {len(cur)})")
    rs, cs = [f["score"] for f in ref], [f["score"] for f in cur]
    drop = float(np.mean(rs) - np.mean(cs))
    p = float(mannwhitneyu(cs, rs, alternative="less").pvalue) if len(set(rs + cs)) > 1 else 1.0
    return Signal("feedback_score", "output", drop, rule, bool(drop > FEEDBACK_DROP and p < FEEDBACK_P),
                  p_value=p, detail={"current_mean": float(np.mean(cs)), "reference_mean": float(np.mean(rs)),
                                     "n_current": len(cs), "n_reference": len(rs), "reference": what})


# --- the reference: the run's training data ----------------------------------------------------------------
@dataclass
class Reference:
    prompts: list[list[dict]]  # prompt messages (system/user turns) of each chat-shaped example
    answers: list[str]
    notes: list[str]


def _data_file(run: Path, recorded: str) -> Path:
    p = Path(recorded)
    for cand in (p, run.resolve().parent / p, run / p):
        if cand.is_file():
            return cand
    raise TuneforgeError(f"{recorded}: training data of {run} not found (drift compares production with it; "
                         "run from the directory you trained in, or restore the file)")


def load_reference(run_dir: str | Path) -> Reference:
    """The prompts and answers the run trained on (data.json's files; val_data too: it is in-distribution)."""
    from tuneforge.data.load import load_samples
    from tuneforge.run import file_sha256, read_json

    run = Path(run_dir)
    files = read_json(run / "data.json").get("files", [])
    if not files:
        raise TuneforgeError(f"{run}: data.json names no training files")
    prompts, answers, notes = [], [], []
    for f in files:
        path = _data_file(run, f["path"])
        if f.get("sha256") and file_sha256(path) != f["sha256"]:
            notes.append(f"{path} changed since training (sha256 differs): comparing with its current content")
        for s in load_samples(path):
            if s.messages:
                prompts.append(s.prompt_messages)
                answers.append(s.reference or "")
    if not prompts:
        notes.append("the training data has no prompts (text format): input-side signals are n/a")
    return Reference(prompts, answers, notes)


def _tokenizer(run) -> object:
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer(str(run.model) if run.model else str(run.info.get("base")))  # adapter/ holds the same


def _templated_len(tok, messages: list[dict]) -> int:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def embed_prompts(loaded, prompts: list, batch_size: int = 16) -> np.ndarray:
    """Mean-pooled last hidden state of each prompt (messages → the chat template; strings as they are)."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
             for p in prompts]
    side = tok.padding_side
    tok.padding_side = "right"
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=EMBED_MAX_TOKENS, add_special_tokens=False)
                enc = {k: v.to(model.device) for k, v in enc.items()}
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
                t = enc["input_ids"].shape[1]
                hidden = hidden[:, -t:, :].float()  # prompt tuning prepends virtual tokens: keep the real ones
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
    finally:
        tok.padding_side = side
    return np.concatenate(out) if out else np.zeros((0, 1))


def _sample(items: list, n: int, seed: int) -> list:
    if len(items) <= n:
        return list(items)
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def compute_drift(run_dir: str | Path, engine, *, since: float | None = None, until: float | None = None,
                  model: str | None = None, embeddings: bool = True, loaded=None, seed: int = 0) -> DriftReport:
    """Every signal for the requests of `model` in [since, until) against the run's training data.

    loaded: the run loaded for inference (eval.harness.load_for_inference), reused by scheduled checks."""
    from tuneforge.run import read_run, run_name

    run = read_run(run_dir)
    until = time.time() if until is None else until
    name = model or run_name(run_dir)
    rows = query.requests(engine, since=since, until=until, model=name, ok_only=True)
    if not rows:
        logged = query.models(engine)
        raise TuneforgeError(f"no answered requests for model '{name}' {_window(since, until)} in the request log"
                             + (f" (models logged: {', '.join(logged)}; pass --model NAME)" if logged else
                                " (the log is empty: is --db the server's database?)"))
    ref = load_reference(run_dir)
    tok = _tokenizer(run)
    notes = list(ref.notes)
    signals: list[Signal] = []

    # input side
    ref_len = [_templated_len(tok, p) for p in ref.prompts]
    signals.append(length_signal("prompt_length", "input", ref_len, [r["prompt_tokens"] for r in rows]))
    with_text = [r for r in rows if r.get("prompt")]
    if len(with_text) < len(rows):
        notes.append(f"{len(rows) - len(with_text)} request(s) logged without content (--log-content hash): "
                     "left out of new_token_rate and prompt_embedding")
    prod_prompts = [query.prompt_of(r) for r in with_text]
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    signals.append(new_token_rate([enc(prompt_text(p)) for p in ref.prompts],
                                  [enc(prompt_text(p)) for p in prod_prompts], decode=tok.decode, seed=seed))
    if embeddings and ref.prompts and len(prod_prompts) >= MIN_REQUESTS:
        if loaded is None:
            from tuneforge.eval.harness import load_for_inference

            loaded = load_for_inference(run_dir)
        ref_emb = embed_prompts(loaded, _sample(ref.prompts, EMBED_SAMPLE, seed))
        prod_emb = embed_prompts(loaded, [p if isinstance(p, list) else prompt_text(p)
                                          for p in _sample(prod_prompts, EMBED_SAMPLE, seed + 1)])
        signals.append(embedding_signal(ref_emb, prod_emb, seed=seed))
    else:
        sig = embedding_signal(None, None)
        if not embeddings:
            sig.note = "skipped (--no-embeddings)"
        signals.append(sig)

    # output side
    per_answer = [r["completion_tokens"] / max(r["n_choices"], 1) for r in rows]
    ref_answers = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in ref.answers]
    signals.append(length_signal("completion_length", "output", ref_answers, per_answer))
    signals.append(bad_answer_signal(rows))
    before = query.feedback(engine, until=since, model=name) if since is not None else []
    current = query.feedback(engine, since=since, until=until, model=name)
    signals.append(feedback_signal(before, current))
    return DriftReport(str(run_dir), name, since, until, len(rows), len(ref.prompts), signals, notes)


def record(engine, report: DriftReport) -> str:
    """Store a check in `drift_checks` (the dashboard reads them); returns its id."""
    cid = new_id("drift")
    with engine.begin() as conn:
        conn.execute(insert(DriftCheckRow), [dict(
            id=cid, created=report.created, run=report.run, model=report.model, since=report.since,
            until=report.until, n_requests=report.n_requests, drift=report.drift,
            signals=json.dumps([{**asdict(s), "verdict": s.verdict} for s in report.signals],
                               default=_json_default))])
    return cid


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def checks(engine, *, since: float | None = None, limit: int = 200) -> list[dict]:
    """Stored drift checks, oldest first (at most `limit`, the newest ones)."""
    t = DriftCheckRow.__table__
    q = select(t).order_by(t.c.created.desc()).limit(limit)
    if since is not None:
        q = q.where(t.c.created >= since)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["signals"] = json.loads(r["signals"])
    return rows[::-1]
