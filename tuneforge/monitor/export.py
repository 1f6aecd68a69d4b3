"""Back into training: well-rated and corrected requests → a chat-format training file with provenance.

    tuneforge monitor export-feedback --db URL [--since 30d] [--model NAME] [--min-score 0.8] --output new.jsonl
    tuneforge data check new.jsonl
    tuneforge train --from-run runs/sql --data new.jsonl --output runs/sql-2

Each row is `{"messages": [...the prompt as sent..., {"role": "assistant", "content": ANSWER}], "metadata":
{...}}`: the answer is the user's correction when there is one (whatever the score), else the model's own answer
when its latest feedback scored at least `--min-score`. `metadata` says where the row came from (request id,
model, time, score, feedback id, corrected or not); training ignores it. Left out and counted: /v1/completions
requests (not chat), requests logged as hashes (no text), failed requests, poorly rated answers without a
correction, and repeats of a row already written.
"""

from __future__ import annotations

from typing import Iterator

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.monitor import query
from tuneforge.run import write_atomic_text

DEFAULT_MIN_SCORE = 0.8
HASHED = re.compile(r"sha256:[0-9a-f]{64}")  # what feedback.py keeps of a text under --log-content hash


@dataclass
class ExportResult:
    path: Path
    rows: int = 0
    corrected: int = 0
    well_rated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n) or "none"
        return (f"wrote {self.rows} training rows to {self.path} ({self.corrected} corrected, {self.well_rated} "
                f"well-rated answers); skipped: {skipped}")


def _messages(prompt) -> list[dict] | None:
    """The prompt's turns in our chat format (text content; roles the training format knows)."""
    if not isinstance(prompt, list):
        return None
    out = []
    for m in prompt:
        if not isinstance(m, dict):
            return None
        role = "system" if m.get("role") == "developer" else m.get("role")
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if role not in ("system", "user", "assistant") or not isinstance(content, str) or not content.strip():
            return None
        out.append({"role": role, "content": content})
    return out if out and out[-1]["role"] == "user" else None


def export_feedback(engine, output: str | Path, *, since: float | None = None, model: str | None = None,
                    min_score: float = DEFAULT_MIN_SCORE) -> ExportResult:
    res = ExportResult(Path(output))
    skipped = {"not chat": 0, "no text logged": 0, "failed request": 0, "rated below --min-score": 0,
               "duplicate": 0}
    latest: dict[str, dict] = {}
    for f in query.feedback(engine, since=since, model=model):  # time order: the last one per request wins
        latest[f["request_id"]] = f
    by_id = {r["id"]: r for r in query.requests(engine, ids=list(latest))}
    seen: set[str] = set()
    lines = []
    for rid, f, req in _answered_chats(latest, by_id, skipped):
        correction = f["correction"]
        msgs = _messages(query.prompt_of(req))
        if msgs is None or (correction and HASHED.fullmatch(correction)):
            skipped["no text logged"] += 1
            continue
        if correction:
            answer, kind = correction, "corrected"
        elif f["score"] >= min_score and req["completion"]:
            answer, kind = req["completion"], "well_rated"
        else:
            skipped["rated below --min-score"] += 1
            continue
        row = {"messages": msgs + [{"role": "assistant", "content": answer}]}
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(key)
        row["metadata"] = {"source": "tuneforge-feedback", "request_id": rid, "model": req["model"],
                           "request_time": query.iso(req["created"]), "feedback_id": f["id"],
                           "feedback_time": query.iso(f["created"]), "score": f["score"], "thumbs": f["thumbs"],
                           "corrected": kind == "corrected"}
        lines.append(json.dumps(row, ensure_ascii=False))
        res.rows += 1
        res.corrected += kind == "corrected"
        res.well_rated += kind == "well_rated"
    res.skipped = skipped
    _write_rows(output, lines, skipped, len(latest), nothing="no request qualifies for export")
    return res


# --- preference pairs (`export-feedback --pairs`): the production loop into DPO ---------------------------------

@dataclass
class PairsResult:
    path: Path
    rows: int = 0
    corrections: int = 0  # correction preferred over the answer it corrected
    thumbs: int = 0  # a well-rated answer preferred over a poorly rated one to the same prompt
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n) or "none"
        return (f"wrote {self.rows} preference pairs to {self.path} ({self.corrections} correction vs answer, "
                f"{self.thumbs} well-rated vs poorly rated answer); skipped: {skipped}")


def export_pairs(engine, output: str | Path, *, since: float | None = None, model: str | None = None,
                 min_score: float = DEFAULT_MIN_SCORE) -> PairsResult:
    """Preference rows (OpenAI's DPO shape, `metadata` with provenance) from the request log's feedback:

    - a correction is preferred over the model's answer it corrected (whatever the score);
    - for one prompt (the same messages), every answer rated at least `min_score` (thumbs up = 1) is preferred
      over every answer rated at most 1 - `min_score` (thumbs down = 0).

    Each request counts with its latest feedback. Left out and counted: failed requests, /v1/completions
    requests, hash-logged text, rated answers with no opposite answer to the same prompt, pairs whose two
    answers are the same text, and repeats of a pair already written. Then:
    `tuneforge train --objective dpo --from RUN --data prefs.jsonl`."""
    res = PairsResult(Path(output))
    skipped = {"not chat": 0, "no text logged": 0, "failed request": 0, "no opposite answer": 0,
               "same answer": 0, "duplicate": 0}
    latest: dict[str, dict] = {}
    for f in query.feedback(engine, since=since, model=model):  # time order: the last one per request wins
        latest[f["request_id"]] = f
    by_id = {r["id"]: r for r in query.requests(engine, ids=list(latest))}
    groups: dict[str, dict] = {}  # prompt → {"messages", "good": [(req, f)], "bad": [(req, f)]}
    seen: set[str] = set()
    lines: list[str] = []

    def emit(msgs: list[dict], good: str, bad: str, meta: dict) -> bool:
        if good.strip() == bad.strip():
            skipped["same answer"] += 1
            return False
        row = {"input": {"messages": msgs}, "preferred_output": [{"role": "assistant", "content": good}],
               "non_preferred_output": [{"role": "assistant", "content": bad}]}
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen:
            skipped["duplicate"] += 1
            return False
        seen.add(key)
        lines.append(json.dumps({**row, "metadata": {"source": "tuneforge-feedback", **meta}}, ensure_ascii=False))
        return True

    for rid, f, req in _answered_chats(latest, by_id, skipped):
        msgs = _messages(query.prompt_of(req))
        answer = req["completion"]
        correction = f["correction"]
        if msgs is None or not answer or HASHED.fullmatch(answer) or (correction and HASHED.fullmatch(correction)):
            skipped["no text logged"] += 1
            continue
        if correction:
            if emit(msgs, correction, answer, {"kind": "correction", "request_id": rid, "model": req["model"],
                                               "request_time": query.iso(req["created"]), "feedback_id": f["id"],
                                               "score": f["score"]}):
                res.corrections += 1
        side = "good" if f["score"] >= min_score else "bad" if f["score"] <= 1 - min_score else None
        if side is None:
            continue
        g = groups.setdefault(json.dumps(msgs, sort_keys=True, ensure_ascii=False),
                              {"messages": msgs, "good": [], "bad": []})
        g[side].append((req, f, bool(correction)))
    for g in groups.values():
        if not (g["good"] and g["bad"]):
            skipped["no opposite answer"] += sum(1 for *_, corrected in g["good"] + g["bad"] if not corrected)
            continue
        for up, fu, _ in g["good"]:
            for down, fd, _ in g["bad"]:
                if emit(g["messages"], up["completion"], down["completion"],
                        {"kind": "thumbs", "preferred_request_id": up["id"], "non_preferred_request_id": down["id"],
                         "model": up["model"], "preferred_score": fu["score"], "non_preferred_score": fd["score"]}):
                    res.thumbs += 1
    res.rows = len(lines)
    res.skipped = skipped
    _write_rows(output, lines, skipped, len(latest), nothing="no preference pair in the request log")
    return res


def _write_rows(output: str | Path, lines: list[str], skipped: dict[str, int], rated: int, *, nothing: str) -> None:
    """Write the JSONL atomically, or refuse with why every rated request was skipped (nothing half-written)."""
    if not lines:
        raise TuneforgeError(f"{nothing} (" + ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
                             + f"; {rated} rated in all): nothing written")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_text(out, "".join(line + "\n" for line in lines))


def _answered_chats(latest: dict, by_id: dict, skipped) -> "Iterator[tuple[str, dict, dict]]":
    """(request id, its latest feedback, the request) for each rated request that was a chat answered with 200;
    the others are counted in `skipped`."""
    for rid, f in latest.items():
        req = by_id.get(rid)
        if req is None:
            continue
        if req["status"] != 200:
            skipped["failed request"] += 1
        elif req["endpoint"] != "chat.completions":
            skipped["not chat"] += 1
        else:
            yield rid, f, req
