"""The pre-flight report for a data file: schema errors (OpenAI codes), token lengths, truncation,
duplicates, label balance and the guide's warnings. CLI: `tuneforge data check FILE [--json]`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.load import scan
from tuneforge.data.tokenize import encode

GUIDE_MIN_EXAMPLES = 1000
IMBALANCE_RATIO = 5


@dataclass
class Report:
    path: str
    n_examples: int = 0
    format: str | None = None
    formats: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tokens: dict | None = None
    supervised_tokens: int | None = None
    n_truncated: int | None = None
    max_seq_len: int = 2048
    duplicates: dict = field(default_factory=lambda: {"exact": [], "near": []})
    label_balance: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "n_examples": self.n_examples, "format": self.format,
                "formats": self.formats, "errors": self.errors, "warnings": self.warnings, "tokens": self.tokens,
                "supervised_tokens": self.supervised_tokens, "n_truncated": self.n_truncated,
                "max_seq_len": self.max_seq_len, "duplicates": self.duplicates, "label_balance": self.label_balance}

    def render(self) -> str:
        out = [f"{self.path}: {self.n_examples} examples, format {self.format or 'unknown'}"
               + (f" (mixed: {self.formats})" if len(self.formats) > 1 else "")]
        if self.tokens:
            t = self.tokens
            out.append(f"tokens per example: min {t['min']}, mean {t['mean']:.1f}, p50 {t['p50']}, p95 {t['p95']}, "
                       f"max {t['max']}; total {t['total']:,} ({self.supervised_tokens:,} supervised)")
            out.append(f"truncated at max_seq_len={self.max_seq_len}: {self.n_truncated}")
        if self.label_balance:
            out.append("labels: " + ", ".join(f"{k}={v}" for k, v in self.label_balance.items()))
        d = self.duplicates
        out.append(f"duplicates: {len(d['exact'])} exact groups, {len(d['near'])} near groups")
        for g in d["exact"][:5]:
            out.append(f"  exact: lines {', '.join(map(str, g))}")
        for g in d["near"][:5]:
            out.append(f"  near: lines {', '.join(map(str, g))}")
        for w in self.warnings:
            out.append(f"warning: {w}")
        for e in self.errors[:50]:
            out.append(f"error: {e['where']}: {e['code']}" + (f" [{e['field']}]" if e["field"] else "")
                       + f": {e['message']}")
        if len(self.errors) > 50:
            out.append(f"... and {len(self.errors) - 50} more errors (see --json)")
        out.append("OK" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        return "\n".join(out)


def _key(sample) -> str:
    if sample.messages is None:
        return sample.text or ""
    return "\u241e".join(f"{m['role']}:{m['content']}" for m in sample.messages)


def _near_key(text: str) -> str:
    # near-duplicates: identical after case, whitespace and punctuation folding (cheap, O(n))
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _percentile(sorted_vals: list[int], q: float) -> int:
    return sorted_vals[min(len(sorted_vals) - 1, int(q * (len(sorted_vals) - 1) + 0.5))]


def check_file(path: str | Path, tokenizer=None, max_seq_len: int = 2048, fmt: str = "auto") -> Report:
    res = scan(path, fmt)
    rep = Report(str(path), max_seq_len=max_seq_len)
    rep.n_examples = len(res.records)
    rep.formats = dict(res.formats)
    rep.format = res.main_format
    rep.errors = [{"where": f"{e.path}" + (f":{e.line}" if e.line else ""), "line": e.line, "field": e.field,
                   "code": e.code, "message": e.detail} for e in res.errors]
    good = [(line, s) for line, s in zip(res.lines, res.samples) if s is not None]
    if len(res.formats) > 1:
        rep.warnings.append(f"inconsistent formatting: {len(res.formats)} formats in one file {dict(res.formats)}; "
                            "the guide asks for consistent formatting (training refuses mixed files)")
    chats = [s for _, s in good if s.messages is not None]
    with_system = sum(1 for s in chats if s.messages[0]["role"] == "system")
    if chats and 0 < with_system < len(chats):
        rep.warnings.append(f"inconsistent formatting: {with_system} of {len(chats)} chats have a system prompt")
    if 0 < rep.n_examples < GUIDE_MIN_EXAMPLES:
        rep.warnings.append(f"only {rep.n_examples} examples: the guide advises against fine-tuning with fewer than "
                            f"{GUIDE_MIN_EXAMPLES}; consider prompting or RAG, or collect more data")
    exact: dict[str, list[int]] = defaultdict(list)
    near: dict[str, list[int]] = defaultdict(list)
    for line, s in good:
        k = _key(s)
        exact[k].append(line)
        near[_near_key(k)].append(line)
    rep.duplicates["exact"] = [v for v in exact.values() if len(v) > 1]
    exact_sets = {tuple(v) for v in rep.duplicates["exact"]}
    rep.duplicates["near"] = [v for v in near.values() if len(v) > 1 and tuple(v) not in exact_sets]
    if rep.duplicates["exact"]:
        n = sum(len(v) - 1 for v in rep.duplicates["exact"])
        rep.warnings.append(f"{n} exact duplicate example(s): they over-weight those rows and leak across splits")
    labels = [s.label for _, s in good if s.label is not None]
    if labels:
        rep.label_balance = dict(sorted(Counter(labels).items()))
        counts = list(rep.label_balance.values())
        if len(counts) > 1 and max(counts) > IMBALANCE_RATIO * min(counts):
            rep.warnings.append(f"label imbalance: largest class {max(counts)} vs smallest {min(counts)} "
                                "(the guide asks for a balanced distribution)")
    if tokenizer is not None and good:
        lens, sup, trunc = [], 0, 0
        for _, s in good:
            e = encode(s, tokenizer, max_seq_len=10**9)
            lens.append(len(e.input_ids))
            sup += e.n_supervised
            trunc += len(e.input_ids) > max_seq_len
        srt = sorted(lens)
        rep.tokens = {"min": srt[0], "max": srt[-1], "mean": sum(srt) / len(srt), "p50": _percentile(srt, 0.5),
                      "p95": _percentile(srt, 0.95), "total": sum(srt)}
        rep.supervised_tokens, rep.n_truncated = sup, trunc
        if trunc:
            rep.warnings.append(f"{trunc} example(s) longer than max_seq_len={max_seq_len} will be truncated")
    if good and not chats and not any(s.text for _, s in good):
        rep.warnings.append("no example has an assistant reply to learn from")
    return rep
