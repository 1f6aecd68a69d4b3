"""Generate the `pick` reinforcement task: name the one word of a list that belongs to a category.

    python examples/reinforcement/make_pick.py --train 64 --test 100 --out examples/reinforcement

Each row is OpenAI's reinforcement shape: `messages` (the prompt) plus `answer` (the word) and `options` (the
list), which the graders read as item["answer"] / item["options"]: `pick_grader.json` (python: 1 for exactly the
word, 0.5 for the word among none of the distractors) and `pick_rouge_grader.json` (text_similarity rouge_l
against the word: partial credit for a short answer that names it). Why this task: the answer is in the prompt,
so it needs no knowledge, and a 135M base's greedy answer often names the right word inside a sentence (pick
grader 0.16 on 40 test prompts), room that RL can take. Measured caveat (bench/RESULTS.md): at temperature 1 the
same base's samples are mostly off-topic, so rewards during GRPO are rare (40-80% of groups score all alike).
Train and test prompts use disjoint word triples; seeded, so the files are reproducible.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CATEGORIES = {
    "an animal": ["tiger", "horse", "rabbit", "eagle", "salmon", "monkey", "sheep", "wolf", "camel", "frog",
                  "dolphin", "goat", "parrot", "bear", "mouse", "whale"],
    "a color": ["green", "purple", "yellow", "orange", "brown", "pink", "blue", "red", "gray", "violet",
                "black", "white"],
    "a fruit": ["banana", "apple", "cherry", "grape", "mango", "lemon", "peach", "pear", "plum", "melon",
                "kiwi", "papaya"],
    "a tool": ["hammer", "wrench", "shovel", "saw", "drill", "chisel", "pliers", "screwdriver", "rake", "axe"],
    "a country": ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Mexico", "Spain", "Kenya", "Norway",
                  "Peru", "Italy"],
    "a piece of furniture": ["chair", "table", "sofa", "bed", "desk", "shelf", "stool", "wardrobe", "bench",
                             "dresser"],
    "a musical instrument": ["guitar", "piano", "violin", "drum", "flute", "trumpet", "cello", "harp",
                             "saxophone", "clarinet"],
    "a vehicle": ["car", "bus", "bicycle", "truck", "train", "boat", "plane", "scooter", "tractor", "taxi"],
}
TEMPLATES = [
    "Which of these words is {cat}: {opts}? Answer with just the word.",
    "Pick the word that names {cat} from this list: {opts}. Reply with only that word.",
    "One of {opts} is {cat}. Which one? Answer with one word.",
]


def rows(n: int, rng: random.Random, seen: set) -> list[dict]:
    out = []
    cats = list(CATEGORIES)
    while len(out) < n:
        cat, *others = rng.sample(cats, 3)
        answer = rng.choice(CATEGORIES[cat])
        opts = [answer] + [rng.choice(CATEGORIES[o]) for o in others]
        key = frozenset(opts)
        if key in seen:
            continue
        seen.add(key)
        rng.shuffle(opts)
        prompt = rng.choice(TEMPLATES).format(cat=cat, opts=", ".join(opts))
        out.append({"messages": [{"role": "user", "content": prompt}], "answer": answer, "options": opts})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args()
    rng, seen = random.Random(args.seed), set()
    for name, n in (("train", args.train), ("test", args.test)):
        path = args.out / f"pick.{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows(n, rng, seen)))
        print(f"wrote {path} ({n} rows)")


if __name__ == "__main__":
    main()
