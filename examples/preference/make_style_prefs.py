"""A preference set whose preferred answers have one checkable style, for DPO demos and the SmolLM2 measurement.

Every prompt is a small factual or arithmetic question; the preferred answer is "Answer: X." (the result alone, in
a fixed format), the non-preferred one a correct but chatty sentence. A tuned model's greedy answers can then be
checked with a regular expression (`^Answer: `), and held-out preference accuracy read from the implicit rewards.

    python examples/preference/make_style_prefs.py --train 500 --test 100 --output examples/preference
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

STYLE = r"^Answer: [^\n]{1,40}\.$"  # what a preferred answer looks like (README, bench and tests check this)

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Greece": "Athens", "Poland": "Warsaw", "Chile": "Santiago", "Cuba": "Havana", "Ireland": "Dublin",
            "Portugal": "Lisbon", "Austria": "Vienna", "Sweden": "Stockholm", "Thailand": "Bangkok",
            "Argentina": "Buenos Aires"}


def row(r: random.Random) -> dict:
    kind = r.choice(["add", "sub", "mul", "capital"])
    if kind == "capital":
        country, city = r.choice(sorted(CAPITALS.items()))
        q = r.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?",
                      f"Name the capital of {country}."])
        good = f"Answer: {city}."
        bad = r.choice([f"The capital of {country} is {city}, which is also one of its largest cities.",
                        f"Great question! {city} is the capital city of {country}.",
                        f"{country}'s capital is the city of {city}."])
    else:
        a, b = r.randint(2, 60), r.randint(2, 30)
        op, val, word = {"add": ("+", a + b, "plus"), "sub": ("-", a - b, "minus"),
                         "mul": ("*", a * b, "times")}[kind]
        q = r.choice([f"What is {a} {op} {b}?", f"Compute {a} {word} {b}.", f"How much is {a} {word} {b}?"])
        good = f"Answer: {val}."
        bad = r.choice([f"Sure! {a} {word} {b} equals {val}.", f"Let me work it out: {a} {op} {b} = {val}.",
                        f"The result of {a} {word} {b} is {val}, I hope that helps!"])
    return {"input": {"messages": [{"role": "user", "content": q}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=500)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="examples/preference")
    a = ap.parse_args()
    r = random.Random(a.seed)
    rows, seen = [], set()
    while len(rows) < a.train + a.test:  # distinct prompts: a test prompt never appears in train
        x = row(r)
        q = x["input"]["messages"][0]["content"]
        if q not in seen:
            seen.add(q)
            rows.append(x)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("prefs.train.jsonl", rows[:a.train]), ("prefs.test.jsonl", rows[a.train:])):
        (out / name).write_text("".join(json.dumps(x) + "\n" for x in part))
        print(f"wrote {len(part)} pairs to {out / name}")


if __name__ == "__main__":
    main()
