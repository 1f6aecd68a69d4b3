"""Augmentation: seeded noise, LLM rewrites through a real local model and a real OpenAI-compatible server on
loopback; generated rows checked, de-duplicated, tagged, and kept out of held-out splits."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.helpers import write_jsonl
from tests.openai_server import openai_server
from tests.helpers import tf
from tuneforge.data.augment import augment_file, kept_values, load_sources, noise_text, openai_chat
from tuneforge.data.formats import augmented_from, detect_format, exact_key, near_key, source_id, to_sample
from tuneforge.data.load import load_pairs
from tuneforge.data.split import kfold, split_file, split_records
from tuneforge.errors import DataError

NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"]


def sql_rows(n: int = 24) -> list[dict]:
    r = random.Random(1)
    rows = []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        rows.append({"prompt": f"Translate to SQL: show every order placed by {name} after {2000 + i}",
                     "completion": f"SELECT * FROM orders WHERE customer = '{name}' AND year > {2000 + i};"})
    r.shuffle(rows)
    return rows


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def src(tmp_path) -> Path:
    return write_jsonl(tmp_path / "src.jsonl", sql_rows())


# --- noise -----------------------------------------------------------------------------------------------------
def test_noise_is_reproducible_by_seed_and_changes_with_it(src, tmp_path):
    a, _ = augment_file(src, "noise", tmp_path / "a.jsonl", n=30, seed=7)
    b, _ = augment_file(src, "noise", tmp_path / "b.jsonl", n=30, seed=7)
    c, _ = augment_file(src, "noise", tmp_path / "c.jsonl", n=30, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_noise_touches_prompts_only_and_keeps_what_the_answer_depends_on(src, tmp_path):
    out, res = augment_file(src, "noise", tmp_path / "n.jsonl", n=24, seed=0, noise_rate=0.5)
    rows = read(out)
    original, new = rows[:24], rows[24:]
    assert original == [json.loads(x) for x in src.read_text().splitlines()]  # source rows first, unchanged
    assert len(new) == len(res.rows) == 24
    by_id = {source_id(s): rec for s, rec in load_pairs(src)}
    for row in new:
        prov = row["metadata"]["augmented"]
        source = by_id[prov["sources"][0]]
        assert prov["method"] == "noise" and prov["seed"] == 0
        assert row["completion"] == source["completion"]  # answers untouched by default
        assert row["prompt"] != source["prompt"]
        name = next(n for n in NAMES if n in source["prompt"])
        assert name in row["prompt"]  # a word the answer copies is never noised
        assert all(d in row["prompt"] for d in [w for w in source["prompt"].split() if w.isdigit()])


def test_noise_answers_on_request_and_text_format_needs_it(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": f"describe the colour number {i}",
                                             "completion": f"The colour number {i} is a pleasant shade"}
                                            for i in range(10)])
    out, _ = augment_file(src, "noise", tmp_path / "n.jsonl", n=10, seed=1, noise_rate=1.0, noise_answers=True)
    rows = read(out)
    assert sum(r["completion"] != o["completion"] for r, o in zip(rows[10:], rows)) > 0
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": f"plain text number {i} for language modelling"}
                                              for i in range(5)])
    with pytest.raises(DataError, match="no_prompt"):
        augment_file(text, "noise", tmp_path / "t2.jsonl", n=3)
    assert not (tmp_path / "t2.jsonl").exists()


def test_noise_text_leaves_digits_quotes_and_kept_words():
    text = "Which users named 'Mary Ann' were born after 1990 in Springfield?"
    for seed in range(30):
        out = noise_text(text, random.Random(seed), rate=1.0, keep={"springfield"})
        assert "'Mary Ann'" in out and "1990" in out and "Springfield" in out
        assert out != text


def test_generated_rows_are_deduplicated_against_the_source_and_each_other(tmp_path):
    # one-word prompts of two letters cannot be noised: every attempt is an exact duplicate and is rejected
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "hi", "completion": "hello"},
                                             {"prompt": "Please greet the new colleague warmly", "completion": "Hi!"}])
    out, res = augment_file(src, "noise", tmp_path / "o.jsonl", n=6, seed=0, noise_rate=1.0)
    rows = read(out)
    keys = [exact_key(to_sample(r, detect_format(r))) for r in rows]
    assert len(keys) == len(set(keys))  # no generated row repeats a source or another generated row
    assert res.rejected["duplicate"] > 0
    assert all(r["prompt"] != "hi" for r in rows[2:])


@pytest.mark.cli
def test_bad_output_suffix_fails_before_any_work(src, tmp_path):
    with pytest.raises(DataError, match="jsonl or .json"):
        augment_file(src, "noise", tmp_path / "x.csv", n=2)
    r = tf("data", "augment", str(src), "--method", "paraphrase", "--with", str(tmp_path / "missing-model"),
           "--output", str(tmp_path / "p.jsonl"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.jsonl").exists()


# --- splits keep generated rows in train -------------------------------------------------------------------------
def test_generated_rows_never_enter_a_held_out_split(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": f"question number {i} about the weather today",
                                             "completion": f"answer {i}"} for i in range(40)])
    out, _ = augment_file(src, "noise", tmp_path / "aug.jsonl", n=40, seed=3, noise_rate=0.5)
    records = read(out)
    generated = {i for i, r in enumerate(records) if augmented_from(r)}
    idx = split_records(records, test=0.25, val=0.25, seed=0)
    assert not generated & set(idx["val"] + idx["test"])
    held = {source_id(to_sample(records[i], detect_format(records[i]))) for i in idx["val"] + idx["test"]}
    placed = generated & set(idx["train"])
    assert all(not set(records[i]["metadata"]["augmented"]["sources"]) & held for i in placed)
    assert len(placed) < len(generated)  # rows whose source is held out were dropped, not moved to train
    assert len(idx["val"]) + len(idx["test"]) == 20  # fractions are of the 40 original rows
    for tr, va in kfold(records, k=4, seed=0):
        assert not generated & set(va)
    written = split_file(out, tmp_path / "split", test=0.25, val=0.25, seed=0)
    assert "dropped" in written and written["dropped"][1] == len(generated) - len(placed)
    val_rows = read(written["val"][0]) + read(written["test"][0])
    assert not any(augmented_from(r) for r in val_rows)


# --- LLM rewrites ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_chat(tiny_dir):
    from tuneforge.eval.harness import local_chat

    return local_chat(tiny_dir, max_new_tokens=24, seed=0)


def small_rows() -> list[dict]:
    """Answers that copy no word of their prompt: a random tiny model's rewrites can pass the value checks."""
    return [{"prompt": f"say something kind about {w}", "completion": "it is lovely"} for w in
            "cats dogs rain snow tea bread music maps".split()]


@pytest.mark.parametrize("method", ["paraphrase", "back-translate", "synthesize"])
def test_llm_methods_with_a_local_model(method, tiny_chat, tmp_path):
    chat, name = tiny_chat
    src = write_jsonl(tmp_path / "s.jsonl", small_rows())
    out, res = augment_file(src, method, tmp_path / "o.jsonl", n=4, chat=chat, by=name, seed=0)
    rows = read(out)
    new = rows[8:]
    assert len(new) == len(res.rows) >= 1 and res.attempts <= 8
    sources = {s.id: s.record for s in load_sources(src)}
    for row in new:
        prov = row["metadata"]["augmented"]
        assert prov["method"] == method and prov["by"] == name and set(prov["sources"]) <= set(sources)
        to_sample(row, "prompt_completion")  # passes the data checks
        if method != "synthesize":  # rewrites change the request, keep the answer
            assert row["completion"] == sources[prov["sources"][0]]["completion"]
            assert row["prompt"] != sources[prov["sources"][0]]["prompt"]
    keys = [near_key(to_sample(r, "prompt_completion")) for r in rows]
    assert len(keys) == len(set(keys))


def test_synthesize_writes_new_texts_for_the_rarest_label(tiny_chat, tmp_path):
    chat, name = tiny_chat
    rows = [{"text": f"great product number {i}", "label": "pos"} for i in range(9)] + \
           [{"text": "terrible product, broke at once", "label": "neg"}]
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    out, res = augment_file(src, "synthesize", tmp_path / "o.jsonl", n=4, chat=chat, by=name, seed=0)
    labels = [r["label"] for r in read(out)[10:]]
    assert labels and set(labels) == {"neg"}  # 1 'neg' vs 9 'pos': every new row balances toward 'neg'


def test_rewrites_that_drop_a_number_are_rejected():
    assert kept_values("orders after 2019 by 'Ann'", "orders made after 2019 by 'Ann'")
    assert not kept_values("orders after 2019 by 'Ann'", "recent orders by 'Ann'")
    assert not kept_values("orders after 2019 by 'Ann'", "orders after 2019 by Anna")
    answer = "SELECT * FROM users WHERE country = 'Japan';"
    assert kept_values("Show all users from Japan", "List every user whose country is japan", answer)
    assert not kept_values("Show all users from Japan", "The SQL code will create a table.", answer)
    # a name the answer copies must stay; a sentence's first word or a shared function word need not
    assert not kept_values("List orders of Ingrid", "List orders of Ingrit", "WHERE name = Ingrid")
    assert kept_values("Show orders from Ingrid", "Display Ingrid's orders", "SELECT * FROM orders WHERE n = Ingrid")


@pytest.mark.cli
def test_paraphrase_and_synthesize_through_an_openai_compatible_server(tiny_dir, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", small_rows())
    with openai_server(tiny_dir) as url:
        for method in ("paraphrase", "synthesize"):
            out = tmp_path / f"{method}.jsonl"
            r = tf("data", "augment", str(src), "--method", method, "--with", url, "--n", "3",
                   "--max-new-tokens", "16", "--output", str(out), "--no-progress")
            assert r.returncode == 0, r.stderr
            new = read(out)[8:]
            assert new and all(row["metadata"]["augmented"]["by"].startswith(url) for row in new)
            assert all(row["metadata"]["augmented"]["method"] == method for row in new)
    # the server is gone now: a clear one-line error, and nothing written
    r = tf("data", "augment", str(src), "--method", "paraphrase", "--with", url, "--output",
           str(tmp_path / "gone.jsonl"), "--no-progress")
    assert r.returncode == 2 and "cannot reach the server" in r.stderr
    assert not (tmp_path / "gone.jsonl").exists()


@pytest.mark.slow
def test_paraphrase_and_synthesize_with_smollm2_served_on_loopback(tmp_path):
    """A 135M model paraphrases badly: the gate must reject what loses the answer's words, and keep the rest."""
    from tuneforge.models.load import resolve

    rows = [{"prompt": f"Translate to SQL: Show all users from {c}", "completion":
             f"SELECT * FROM users WHERE country = '{c}';"} for c in ("Italy", "Peru", "Japan", "Kenya")]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    with openai_server(resolve("smollm2-135m-instruct")) as url:
        chat, name = openai_chat(url, max_tokens=32, temperature=0.7)
        out, para = augment_file(src, "paraphrase", tmp_path / "p.jsonl", n=2, seed=0, chat=chat, by=name)
        out2, synth = augment_file(src, "synthesize", tmp_path / "s2.jsonl", n=2, seed=0, chat=chat, by=name)
    assert para.attempts == len(para.rows) + sum(para.rejected.values())
    assert len(para.rows) == 2 or para.attempts == 4
    # the gate did its job on something: a paraphrase kept, or one rejected for losing the answer's value
    assert para.rows or para.rejected.get("lost a value the answer depends on"), para.summary()
    for row in read(out)[4:]:  # whatever was accepted kept the country the answer names
        country = row["completion"].split("'")[1]
        assert country.lower() in row["prompt"].lower()
    new = read(out2)[4:]
    assert new, synth.summary()
    for row in new:
        to_sample(row, "prompt_completion")
        assert row["metadata"]["augmented"]["method"] == "synthesize" and len(row["metadata"]["augmented"]["sources"]) == 3
