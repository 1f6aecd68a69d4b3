"""Data augmentation: seeded noise injection, and LLM rewrites (paraphrase, back-translation, synthetic examples).

Every generated row is checked like `data check` (the same `to_sample` field checks), de-duplicated against the
source and the other new rows, and tagged `"metadata": {"augmented": {...}}` naming its method and source
examples, so `data split`, k-fold and the training hold-out keep it in train (see `data/split.py`).
Run: `tuneforge data augment DATA --method noise|paraphrase|back-translate|synthesize [--n N] [--with MODEL_OR_URL]
--output F`. In code: `augment_file(path, method, output, chat=...)`, where `chat` maps a list of chats (OpenAI
message lists) to one reply each: `openai_chat(base_url)` for any OpenAI-compatible server, or
`tuneforge.eval.harness.local_chat(model)` for a local model (this layer must not import eval itself).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.data.formats import Sample, augmented_from, exact_key, near_key, near_dup_text, source_id, to_sample
from tuneforge.data.load import load_pairs
from tuneforge.errors import DataError, TuneforgeError
from tuneforge.run import write_atomic_text

METHODS = ("noise", "paraphrase", "back-translate", "synthesize")
LLM_METHODS = METHODS[1:]
ChatFn = Callable[[list[list[dict]]], list[str]]  # chats -> one reply per chat, in order

# --- where the prompt and the answer live in each format -----------------------------------------------------
Slot = tuple  # a key path into a record: ("prompt",) or ("messages", 2, "content")


def prompt_slots(rec: dict, fmt: str) -> list[Slot]:
    """The texts a user would type: what noise touches by default (answers are what the model learns)."""
    if fmt == "prompt_completion":
        return [("prompt",)]
    if fmt == "alpaca":
        return [("instruction",)] + ([("input",)] if str(rec.get("input") or "").strip() else [])
    if fmt == "classification":
        return [("text",)]
    if fmt == "chat":
        return [("messages", i, "content") for i, m in enumerate(rec["messages"]) if m.get("role") == "user"]
    return []  # text: no prompt, the whole text is the target


def answer_slots(rec: dict, fmt: str) -> list[Slot]:
    if fmt == "prompt_completion":
        return [("completion",)]
    if fmt == "alpaca":
        return [("output",)]
    if fmt == "chat":
        return [("messages", i, "content") for i, m in enumerate(rec["messages"]) if m.get("role") == "assistant"]
    if fmt == "text":
        return [("text",)]
    return []  # classification: the label is never changed


def rewrite_slot(rec: dict, fmt: str) -> Slot:
    """The one text an LLM rewrites: the request (alpaca: its instruction, not the input data it refers to;
    chat: the last user turn); for plain text the whole text."""
    if fmt == "chat":
        return prompt_slots(rec, fmt)[-1]
    return {"prompt_completion": ("prompt",), "alpaca": ("instruction",), "classification": ("text",),
            "text": ("text",)}[fmt]


def _get(rec: Any, slot: Slot) -> str:
    for k in slot:
        rec = rec[k]
    return str(rec)


def _set(rec: Any, slot: Slot, value: str) -> None:
    for k in slot[:-1]:
        rec = rec[k]
    rec[slot[-1]] = value


# --- noise ----------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W\d_]{3,}")  # alphabetic words of 3+ letters: numbers and identifiers are never touched
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")  # values the answer may depend on
_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
NOISE_OPS = ("swap", "delete", "replace", "repeat", "case", "space")


def _neighbour(ch: str, rng: random.Random) -> str:
    low = ch.lower()
    for r, row in enumerate(_KEYBOARD):
        c = row.find(low)
        if c >= 0:
            near = [row[j] for j in (c - 1, c + 1) if 0 <= j < len(row)]
            near += [_KEYBOARD[rr][c] for rr in (r - 1, r + 1) if 0 <= rr < 3 and c < len(_KEYBOARD[rr])]
            out = rng.choice(near)
            return out.upper() if ch.isupper() else out
    return ch + ch  # not on the Latin keyboard: a doubled letter is still a typo


def _edit(text: str, m: re.Match, op: str, rng: random.Random) -> tuple[int, int, str]:
    """(start, end, replacement) for one noise operation on the word `m`."""
    w, a, b = m.group(), m.start(), m.end()
    i = rng.randrange(len(w) - 1)
    if op == "swap":
        return a, b, w[:i] + w[i + 1] + w[i] + w[i + 2:]
    if op == "delete":
        return a, b, w[:i] + w[i + 1:]
    if op == "replace":
        return a, b, w[:i] + _neighbour(w[i], rng) + w[i + 1:]
    if op == "repeat":
        return a, b, w[:i + 1] + w[i:]
    if op == "case":
        options = [x for x in (w.lower(), w.upper(), w.capitalize(), w[0].swapcase() + w[1:]) if x != w]
        return a, b, rng.choice(options) if options else w[:i] + w[i + 1] + w[i] + w[i + 2:]  # uncased script
    # space: join with the previous word, or a doubled space after the word
    if a >= 2 and text[a - 1] == " " and not text[a - 2].isspace():
        return a - 1, b, w
    return a, b, w + " "


def noise_text(text: str, rng: random.Random, rate: float = 0.1, keep: set[str] | frozenset = frozenset()) -> str:
    """Typos (swap, delete, keyboard-neighbour replace, repeat), casing and whitespace on about `rate` of the
    words. Digits, quoted values, words under 3 letters and the words in `keep` (lowercase: the words the answer
    copies, such as names) are left alone, so the answer stays right."""
    quoted = [q.span() for q in _QUOTED.finditer(text)]
    words = [m for m in _WORD.finditer(text)
             if not any(a <= m.start() < b for a, b in quoted) and m.group().lower() not in keep]
    if not words:
        return text
    k = max(1, round(rate * len(words)))
    edits = [_edit(text, m, rng.choice(NOISE_OPS), rng) for m in rng.sample(words, min(k, len(words)))]
    for a, b, rep in sorted(edits, reverse=True):  # right to left: earlier offsets stay valid
        text = text[:a] + rep + text[b:]
    return text


# --- LLM prompts ----------------------------------------------------------------------------------------------
KEEP = "Keep every name, number, code and quoted value exactly as it is."
PARAPHRASE = ("Rewrite the text below in different words, keeping its meaning. " + KEEP +
              " Reply with the rewritten text only.\n\nText:\n{text}")
TRANSLATE = "Translate the text below into {language}. " + KEEP + " Reply with the translation only.\n\nText:\n{text}"
SYNTHESIZE = ("Here are {k} examples of {what}:\n\n{examples}\n\nWrite one new {one} of the same kind, different "
              "from all of these. Reply with the {one} only.")
_LEAD = re.compile(r"^(here is|here's|sure|rewritten|paraphrase|translation|new request|request|text)\b[^\n]*:\s*\n",
                   re.I)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def clean_reply(text: str) -> str:
    """An LLM's reply minus the chatter around the content: a "Here is the rewrite:" line, wrapping quotes."""
    t = _LEAD.sub("", (text or "").strip(), count=1).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'`" and t.count(t[0]) == 2:
        t = t[1:-1].strip()
    return t


def _has(text: str, value: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text, re.I) is not None


def meaning_values(source: str, answer: str = "") -> list[str]:
    """What a rewrite of `source` must keep: its numbers and quoted values, the answer's quoted values that the
    request names ('Japan' in `... country = 'Japan'`), and names (capitalised words, not first in a sentence)
    that the answer copies. Function words the answer shares ("from", "where") are not values."""
    vals = _NUMBER.findall(source) + [q[1:-1] for q in _QUOTED.findall(source)]
    vals += [q[1:-1] for q in _QUOTED.findall(answer) if q[1:-1].strip() and _has(source, q[1:-1])]
    copied = {w.lower() for w in _WORD.findall(answer)}
    for m in _WORD.finditer(source):
        before = source[:m.start()].rstrip()
        if m.group()[0].isupper() and before and before[-1] not in ".!?:" and m.group().lower() in copied:
            vals.append(m.group())
    return [v for v in dict.fromkeys(vals) if v]


def kept_values(source: str, rewrite: str, answer: str = "") -> bool:
    """A rewrite that drops one of `meaning_values` has changed what the answer should be."""
    return all(_has(rewrite, v) for v in meaning_values(source, answer))


# --- the run --------------------------------------------------------------------------------------------------
@dataclass
class Augmented:
    """What `augment` produced: the new rows (tagged), and why the other attempts were rejected."""

    rows: list[dict]
    sources: int
    attempts: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    samples_rejected: list[tuple[str, str]] = field(default_factory=list)  # (reason, text), a few to show

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()) or "none"
        return f"{len(self.rows)} new row(s) from {self.sources} source example(s); {self.attempts} attempt(s); " \
               f"rejected: {why}"


@dataclass
class _Source:
    record: dict
    sample: Sample
    fmt: str
    id: str
    line: int | None


class _Gate:
    """Checks, de-duplicates and tags candidate rows; `near` de-duplicates on case/spacing/punctuation-folded
    content (LLM rewrites), otherwise on exact content (noise: casing and spacing changes are the point)."""

    def __init__(self, sources: list[_Source], near: bool, out: Augmented, keep: int = 5):
        self.key = near_key if near else exact_key
        self.seen = {self.key(s.sample) for s in sources}
        self.out, self.keep = out, keep

    def reject(self, reason: str, text: str = "") -> None:
        self.out.rejected[reason] += 1
        if len(self.out.samples_rejected) < self.keep and text:
            self.out.samples_rejected.append((reason, text[:200]))

    def offer(self, rec: dict, fmt: str, provenance: dict) -> bool:
        where = f"generated:{len(self.out.rows) + 1}"
        try:
            s = to_sample(rec, fmt, where)
        except DataError as e:
            self.reject(f"invalid ({e.code})", json.dumps(rec, ensure_ascii=False))
            return False
        k = self.key(s)
        if k in self.seen:
            self.reject("duplicate", json.dumps(rec, ensure_ascii=False))
            return False
        self.seen.add(k)
        meta = dict(rec.get("metadata") or {}) if isinstance(rec.get("metadata"), dict) else {}
        meta["augmented"] = provenance
        self.out.rows.append({**rec, "metadata": meta})
        return True


def load_sources(path: str | Path, pairs: list[tuple[Sample, Any]] | None = None) -> list[_Source]:
    """The original examples of a file (rows generated earlier are not sources again)."""
    out = []
    for s, rec in pairs if pairs is not None else load_pairs(path):
        if augmented_from(s) is not None:
            continue
        line = s.where.rpartition(":")[2]
        out.append(_Source(rec, s, s.format, source_id(s), int(line) if line.isdigit() else None))
    if not out:
        raise DataError("no original example to augment (every row is generated)", path=str(path), code="empty")
    return out


def _order(n_sources: int, seed: int) -> Callable[[int], int]:
    """attempt j -> source index: a seeded permutation, cycled (each pass reshuffled)."""
    cache: dict[int, list[int]] = {}

    def pick(j: int) -> int:
        p, i = divmod(j, n_sources)
        if p not in cache:
            cache[p] = random.Random(f"{seed}:order:{p}").sample(range(n_sources), n_sources)
        return cache[p][i]

    return pick


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)


def _noise(sources: list[_Source], n: int, seed: int, rate: float, answers: bool, out: Augmented,
           progress: bool) -> None:
    if all(s.fmt == "text" for s in sources) and not answers:
        raise DataError("plain-text examples have no prompt to put noise in; pass --noise-answers to put typos "
                        "into the text the model learns", field="text", code="no_prompt")
    gate = _Gate(sources, near=False, out=out)
    pick = _order(len(sources), seed)
    bar = _bar(n, "noise", progress)
    j = 0
    while len(out.rows) < n and j < 5 * n:
        src = sources[pick(j)]
        rng = random.Random(f"{seed}:noise:{j}")  # row j depends on the seed and j only
        rec = copy.deepcopy(src.record)
        rec.pop("metadata", None)
        keep = set() if answers else {w.lower() for slot in answer_slots(rec, src.fmt)
                                      for w in _WORD.findall(_get(rec, slot))}  # words the answer copies
        for slot in prompt_slots(rec, src.fmt) + (answer_slots(rec, src.fmt) if answers else []):
            _set(rec, slot, noise_text(_get(rec, slot), rng, rate, keep))
        j += 1
        out.attempts += 1
        if gate.offer(rec, src.fmt, {"method": "noise", "sources": [src.id], "source_lines": [src.line],
                                     "seed": seed, "rate": rate, "answers": answers}):
            bar.update(1)
    bar.close()


def _rewrite(sources: list[_Source], n: int, method: str, chat: ChatFn, seed: int, batch: int, by: str,
             pivot: str, language: str, out: Augmented, progress: bool) -> None:
    gate = _Gate(sources, near=True, out=out)
    pick = _order(len(sources), seed)
    bar = _bar(n, method, progress)
    j = 0
    while len(out.rows) < n and j < 2 * n:
        group = [sources[pick(j + i)] for i in range(min(batch, 2 * n - j, n - len(out.rows)))]
        j += len(group)
        out.attempts += len(group)
        texts = [_get(s.record, rewrite_slot(s.record, s.fmt)) for s in group]
        if method == "paraphrase":
            replies = chat([[{"role": "user", "content": PARAPHRASE.format(text=t)}] for t in texts])
        else:
            there = [clean_reply(r) for r in chat([[{"role": "user", "content": TRANSLATE.format(
                language=pivot, text=t)}] for t in texts])]
            replies = chat([[{"role": "user", "content": TRANSLATE.format(language=language, text=t)}]
                            for t in there])
        for src, text, reply in zip(group, texts, replies):
            new = clean_reply(reply)
            if not new:
                gate.reject("empty reply")
                continue
            answer = " ".join(_get(src.record, a) for a in answer_slots(src.record, src.fmt))
            if not kept_values(text, new, answer if src.fmt != "text" else ""):
                gate.reject("lost a value the answer depends on", new)
                continue
            if len(new) > 3 * len(text) + 40:
                gate.reject("too long", new)
                continue
            rec = copy.deepcopy(src.record)
            rec.pop("metadata", None)
            _set(rec, rewrite_slot(rec, src.fmt), new)
            prov = {"method": method, "sources": [src.id], "source_lines": [src.line], "by": by, "seed": seed}
            if method == "back-translate":
                prov.update(pivot=pivot, language=language)
            if gate.offer(rec, src.fmt, prov):
                bar.update(1)
    bar.close()


def _user_text(s: _Source) -> str:
    """The request as the model sees it (alpaca: instruction + input)."""
    return s.sample.text if s.sample.messages is None else s.sample.prompt_messages[-1]["content"]


def _synthesize(sources: list[_Source], n: int, chat: ChatFn, seed: int, batch: int, by: str, shots: int,
                out: Augmented, progress: bool) -> None:
    """New requests written by the LLM after `shots` examples; their answers by the LLM given the same examples
    as earlier turns of a chat. Classification: new texts for the rarest labels first, labels kept."""
    gate = _Gate(sources, near=True, out=out)
    fmt = sources[0].fmt
    rng = random.Random(f"{seed}:synthesize")
    by_label: dict[Any, list[_Source]] = {}
    for s in sources:
        by_label.setdefault(s.sample.label, []).append(s)
    made: Counter = Counter()
    prompts_seen = {near_dup_text(_user_text(s)) for s in sources}
    bar = _bar(n, "synthesize", progress)
    while len(out.rows) < n and out.attempts < 2 * n:
        plans = []
        for _ in range(min(batch, n - len(out.rows), 2 * n - out.attempts)):
            if fmt == "classification":  # the label with the fewest examples so far (ties: first seen)
                label = min(by_label, key=lambda lb: len(by_label[lb]) + made[lb])
                made[label] += 1
                pool = by_label[label]
            else:
                label, pool = None, sources
            plans.append((label, rng.sample(pool, min(shots, len(pool)))))
        out.attempts += len(plans)
        what, one = (("texts labelled '{}'", "text") if fmt == "classification" else
                     ("texts", "text") if fmt == "text" else ("requests", "request"))
        asks = []
        for label, shot in plans:
            examples = "\n\n".join(f"Example {i + 1}:\n{_user_text(s)}" for i, s in enumerate(shot))
            asks.append([{"role": "user", "content": SYNTHESIZE.format(k=len(shot), what=what.format(label),
                                                                      examples=examples, one=one)}])
        news = [clean_reply(r) for r in chat(asks)]
        keep = []
        for plan, new in zip(plans, news):
            if not new:
                gate.reject("empty reply")
            elif near_dup_text(new) in prompts_seen:
                gate.reject("duplicate", new)
            else:
                prompts_seen.add(near_dup_text(new))
                keep.append((plan, new))
        need_answer = [(plan, new) for plan, new in keep if fmt not in ("classification", "text")]
        answers = iter(chat([_answer_chat(shot, new) for (_, shot), new in need_answer]) if need_answer else [])
        for (label, shot), new in keep:
            answer = clean_reply(next(answers)) if fmt not in ("classification", "text") else None
            if fmt not in ("classification", "text") and not answer:
                gate.reject("empty reply")
                continue
            rec = _new_record(fmt, shot, new, answer)
            if gate.offer(rec, fmt, {"method": "synthesize", "sources": [s.id for s in shot],
                                     "source_lines": [s.line for s in shot], "by": by, "seed": seed}):
                bar.update(1)
    bar.close()


def _answer_chat(shot: list[_Source], new: str) -> list[dict]:
    """The examples as earlier turns, then the new request: the model answers in the examples' style."""
    msgs = []
    first = shot[0].sample.messages or []
    if first and first[0]["role"] == "system":
        msgs.append(dict(first[0]))
    for s in shot:
        msgs += [{"role": "user", "content": _user_text(s)}, {"role": "assistant", "content": s.sample.reference}]
    return msgs + [{"role": "user", "content": new}]


def _new_record(fmt: str, shot: list[_Source], new: str, answer: str | None) -> dict:
    if fmt == "prompt_completion":
        return {"prompt": new, "completion": answer}
    if fmt == "alpaca":
        return {"instruction": new, "input": "", "output": answer}
    if fmt == "classification":
        return {"text": new, "label": shot[0].record["label"]}  # the raw label: an int label stays an int
    if fmt == "text":
        return {"text": new}
    first = shot[0].sample.messages or []
    system = [dict(first[0])] if first and first[0]["role"] == "system" else []
    return {"messages": system + [{"role": "user", "content": new}, {"role": "assistant", "content": answer}]}


def augment(sources: list[_Source], method: str, *, n: int, seed: int = 0, chat: ChatFn | None = None,
            by: str = "", noise_rate: float = 0.1, noise_answers: bool = False, pivot: str = "French",
            language: str = "English", shots: int = 3, batch: int = 8, progress: bool = False) -> Augmented:
    """Generate up to `n` new rows from `sources` (see `load_sources`); fewer when attempts are rejected
    (at most 5n attempts for noise, 2n for the LLM methods, each a model call)."""
    if method not in METHODS:
        raise TuneforgeError(f"--method {method}: unknown (have: {', '.join(METHODS)})")
    if n < 1:
        raise TuneforgeError(f"--n {n}: must be at least 1")
    if method in LLM_METHODS and chat is None:
        raise TuneforgeError(f"--method {method} needs a model (--with MODEL_OR_URL)")
    if not 0 < noise_rate <= 1:
        raise TuneforgeError(f"--noise-rate {noise_rate}: must be in (0, 1]")
    out = Augmented(rows=[], sources=len(sources))
    if method == "noise":
        _noise(sources, n, seed, noise_rate, noise_answers, out, progress)
    elif method == "synthesize":
        _synthesize(sources, n, chat, seed, batch, by, shots, out, progress)
    else:
        _rewrite(sources, n, method, chat, seed, batch, by, pivot, language, out, progress)
    return out


def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """Write .jsonl or .json atomically (these keep the metadata object that tags generated rows)."""
    p = Path(path)
    if p.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif p.suffix.lower() == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        raise DataError(f"output must be .jsonl or .json (they keep the provenance tag), not '{p.suffix}'",
                        path=str(p), code="file_type")
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic_text(p, text)


def augment_file(path: str | Path, method: str, output: str | Path, *, n: int | None = None,
                 include_source: bool = True, **kw) -> tuple[Path, Augmented]:
    """Augment a data file; OUTPUT gets the source rows (unless `include_source` is False) then the new ones.
    `n` defaults to one new row per source example. Nothing is written if anything fails."""
    out_path = Path(output)
    if out_path.suffix.lower() not in (".jsonl", ".json"):  # before any model call
        raise DataError(f"output must be .jsonl or .json (they keep the provenance tag), not '{out_path.suffix}'",
                        path=str(out_path), code="file_type")
    if out_path.exists() and Path(path).exists() and os.path.samefile(out_path, path):
        raise DataError("refusing to overwrite the input file", path=str(path), code="file_type")
    pairs = load_pairs(path)
    rows_in = [rec for _, rec in pairs] if include_source else []
    sources = load_sources(path, pairs)
    fmts = {s.fmt for s in sources}
    if len(fmts) > 1:
        raise DataError(f"mixed formats {sorted(fmts)}: use one format per file", path=str(path),
                        code="inconsistent_format")
    result = augment(sources, method, n=n or len(sources), **kw)
    return write_rows(out_path, rows_in + result.rows), result


# --- an OpenAI-compatible endpoint as a ChatFn --------------------------------------------------------------
def openai_chat(base_url: str, *, model: str | None = None, api_key: str | None = None, temperature: float = 0.7,
                top_p: float = 0.95, max_tokens: int = 256, seed: int = 0, concurrency: int = 4,
                timeout: float = 300.0) -> tuple[ChatFn, str]:
    """(chat function, model name) for any OpenAI-compatible server (tuneforge serve, vLLM, OpenAI...), through
    the openai SDK; `model` defaults to the first one the server lists. Requests run `concurrency` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        import openai
    except ImportError:
        raise TuneforgeError("--with URL needs the openai SDK: pip install 'tuneforge[integrations]'") from None

    client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                           timeout=timeout, max_retries=1)

    def failed(e: Exception) -> TuneforgeError:
        if isinstance(e, openai.APIStatusError):
            return TuneforgeError(f"{base_url}: HTTP {e.status_code}: {e.message}")
        return TuneforgeError(f"{base_url}: cannot reach the server ({type(e).__name__}: {e})")

    if model is None:
        try:
            listed = [m.id for m in client.models.list()]
        except openai.OpenAIError as e:
            raise failed(e) from None
        if not listed:
            raise TuneforgeError(f"{base_url}: the server lists no model; name one with --model")
        model = listed[0]

    def one(msgs: list[dict]) -> str:
        try:
            r = client.chat.completions.create(model=model, messages=msgs, temperature=temperature, top_p=top_p,
                                               max_tokens=max_tokens, seed=seed)
        except openai.OpenAIError as e:
            raise failed(e) from None
        return r.choices[0].message.content or ""

    def chat(chats: list[list[dict]]) -> list[str]:
        with ThreadPoolExecutor(max(1, concurrency)) as ex:
            return list(ex.map(one, chats))

    return chat, model
