"""Seeded generators of the defaults bench's five small tasks (bench/defaults.py): same seed, same rows.

Each task is a rule the base model does not know yet but can learn from a few hundred rows, with a held-out test
set of unseen value combinations (no test prompt occurs in training):

| task | kind | rows (train / test) | answer | metric |
|---|---|---|---|---|
| dates | short exact answer | 200 / 60 | a date in words → `YYYY-MM-DD` | exact_match |
| extract | format conversion / extraction | 200 / 60 | a sentence → `{"name": ..., "age": ..., "city": ...}` | exact_match |
| sentiment | classification, 2 labels | 200 / 300 | a product review → `positive` / `negative` (the last clause decides; test phrasing unseen) | accuracy |
| tickets | classification, 7 labels | 210 / 105 | a support message → its team | accuracy |
| describe | long answer (100+ tokens) | 200 / 30 | product specs → a fixed-structure description | rougeL |

Write them as JSONL: `python bench/tasks.py --out DIR` (DIR/<task>/train.jsonl, test.jsonl).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SEED = 2024


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    metric: str  # the eval.json metric the bench compares
    n_train: int
    n_test: int
    max_new_tokens: int  # eval's answer budget (the reference answers fit well within it)
    make: Callable[[random.Random, int, int], tuple[list[dict], list[dict]]]


def _split_unique(r: random.Random, draw: Callable[[], tuple[str, dict]], n_train: int, n_test: int):
    """Draw rows until n_train + n_test distinct keys; the test rows' keys never occur in training."""
    seen, rows = set(), []
    for _ in range(1000 * (n_train + n_test)):
        if len(rows) == n_train + n_test:
            break
        key, row = draw()
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if len(rows) < n_train + n_test:
        raise ValueError(f"only {len(rows)} distinct rows for {n_train} + {n_test}")
    return rows[:n_train], rows[n_train:]


# --- dates: short exact answers -------------------------------------------------------------------------------
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DATE_ASKS = ["Write this date as YYYY-MM-DD:", "Convert to ISO date:", "Give the date in YYYY-MM-DD format:"]


def _ordinal(d: int) -> str:
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def dates(r: random.Random, n_train: int, n_test: int):
    def draw():
        day = dt.date(1990, 1, 1) + dt.timedelta(days=r.randrange(40 * 365))
        m, d, y = MONTHS[day.month - 1], day.day, day.year
        phrase = r.choice([f"{m} {d}, {y}", f"{d} {m} {y}", f"the {_ordinal(d)} of {m}, {y}", f"{m[:3]} {d} {y}",
                           f"{day.strftime('%A')}, {m} {_ordinal(d)} {y}"])
        return day.isoformat(), {"prompt": f"{r.choice(DATE_ASKS)} {phrase}", "completion": day.isoformat()}
    return _split_unique(r, draw, n_train, n_test)


# --- extract: sentence → JSON --------------------------------------------------------------------------------
NAMES = ["Maria", "Tom", "Aiko", "Luca", "Fatima", "Sven", "Chloe", "Ravi", "Olga", "Kwame", "Elena", "Marco",
         "Yuki", "Ines", "Pedro", "Hana", "Jonas", "Amara", "Felix", "Leila", "Noah", "Sofia", "Igor", "Mei",
         "Dario", "Nora", "Tariq", "Greta", "Bruno", "Ayla", "Kofi", "Zoe"]
CITIES = ["Lyon", "Porto", "Osaka", "Dublin", "Nairobi", "Quito", "Tallinn", "Perth", "Bergen", "Seville",
          "Leeds", "Bremen", "Krakow", "Austin", "Hanoi", "Turin", "Ghent", "Malmo", "Cusco", "Tunis", "Oslo",
          "Denver", "Split", "Kyoto"]
SENTENCES = ["{n} is {a} and lives in {c}.", "Meet {n} from {c}, who is {a} years old.",
             "{c} resident {n}, aged {a}, joined the club today.", "At {a}, {n} moved to {c}.",
             "{n} ({a}) works at a bakery in {c}.", "Our new colleague {n} is {a} years old and is based in {c}.",
             "Born {a} years ago, {n} now calls {c} home."]


def extract(r: random.Random, n_train: int, n_test: int):
    def draw():
        n, c, a, t = r.choice(NAMES), r.choice(CITIES), r.randint(18, 85), r.randrange(len(SENTENCES))
        answer = json.dumps({"name": n, "age": a, "city": c})
        text = SENTENCES[t].format(n=n, a=a, c=c)
        return text, {"prompt": f"Extract the name, age and city as JSON: {text}", "completion": answer}
    return _split_unique(r, draw, n_train, n_test)


# --- sentiment: 2 labels ------------------------------------------------------------------------------------
ASPECTS = ["the battery", "the screen", "the sound", "the delivery", "the price", "the build quality",
           "customer service", "the camera", "the set-up", "the manual", "the fit", "the material", "the app",
           "the charger", "the strap", "the lid"]
GOOD = ["is excellent", "works perfectly", "exceeded my expectations", "is a real highlight", "feels premium",
        "was quick and painless", "is worth every cent", "impressed me", "is better than I hoped", "is superb",
        "is not bad at all", "could hardly be better", "won me over", "is a pleasant surprise", "holds up well",
        "does exactly what it should", "is far from disappointing", "made my day", "is solid", "beats the rest"]
BAD = ["is a letdown", "stopped working after a week", "is awful", "feels cheap", "was a nightmare",
       "is overpriced", "disappointed me", "is worse than advertised", "broke on day two", "is useless",
       "is not great", "could have been better", "let me down", "is far from good", "falls apart",
       "does not do what it should", "is a waste of money", "ruined my day", "is flimsy", "lags behind the rest"]
VERDICTS = {"positive": ["Overall I am happy with it.", "I would buy it again.", "Recommended.",
                         "Still, I am glad I bought it."],
            "negative": ["Overall I regret buying it.", "I would not buy it again.", "Not recommended.",
                         "Still, I wish I had not bought it."]}
HELD_OUT_PHRASES = 6  # the last 6 of GOOD and of BAD decide test reviews only: phrasing never seen in training


def sentiment(r: random.Random, n_train: int, n_test: int):
    """A product review → positive/negative. The last clause decides: "x, but y" takes y's side, and a closing
    verdict overrides what came before (the convention the model has to pick up from the rows). The deciding
    phrase of a test review is one training never used, so the test measures the rule, not memorised phrases."""
    def clause(label: str, pool: slice) -> str:
        return f"{r.choice(ASPECTS)} {r.choice((GOOD if label == 'positive' else BAD)[pool])}"

    def draw(pool: slice, other_pool: slice):
        label, other = r.sample(["positive", "negative"], 2)
        form = r.randrange(3)
        if form == 0:
            text = clause(label, pool)
        elif form == 1:
            text = f"{clause(other, other_pool)}, but {clause(label, pool)}"
        else:  # the verdict decides; the held-out phrase is in the overridden clause
            text = f"{clause(other, pool)}. {r.choice(VERDICTS[label])}"
        text = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
        return text, {"text": f"Review: {text}", "label": label}

    seen = slice(0, -HELD_OUT_PHRASES)
    train, _ = _split_unique(r, lambda: draw(seen, seen), n_train, 0)
    train_texts = {x["text"] for x in train}
    test, _ = _split_unique(r, lambda: draw(slice(-HELD_OUT_PHRASES, None), slice(None)), n_test, 0)
    assert not train_texts & {x["text"] for x in test}
    return train, test


# --- tickets: 7 labels ---------------------------------------------------------------------------------------
PRODUCTS = ["headphones", "coffee maker", "yoga mat", "phone case", "desk lamp", "backpack", "smart watch",
            "blender", "keyboard", "tent"]
TICKETS = {
    "billing": ["I was charged twice for my {p} order, please fix the payment.",
                "Why does my invoice show {k} euros more than the price of the {p}?",
                "My card was billed for a {p} I never bought.",
                "Can I get a VAT invoice for the {p} I paid for last week?",
                "The discount code was not applied and I paid full price for the {p}."],
    "shipping": ["My {p} has not arrived yet and it has been {k} days.",
                 "The tracking number for my {p} does not work.",
                 "Can you deliver the {p} to my office instead of my home?",
                 "The courier left my {p} at the wrong address.",
                 "How long does delivery of a {p} take to Spain?"],
    "returns": ["I want to send back the {p}, it is too small.",
                "How do I return a {p} I bought {k} days ago?",
                "The {p} arrived broken and I would like a replacement.",
                "Can I exchange my {p} for a different colour?",
                "Where do I print the return label for the {p}?"],
    "account": ["I forgot my password and cannot log in to check my {p} order.",
                "Please change the email address on my account to {n}@example.com.",
                "My account got locked after {k} failed login attempts.",
                "How do I delete my account? I only bought one {p}.",
                "I cannot update my phone number in my profile, it says error {k}."],
    "technical": ["The {p} app crashes every time I open it.",
                  "My {p} will not connect to bluetooth after the update.",
                  "The {p} stops working after {k} minutes.",
                  "Firmware update failed on my {p}, the screen stays black.",
                  "The {p} keeps restarting on its own."],
    "sales": ["Do you offer a discount if I buy {k} {p}s for my team?",
              "Is the {p} coming back in stock soon?",
              "Can I get a quote for {k} units of the {p}?",
              "Which {p} would you recommend for a beginner?",
              "Will the {p} be on sale next month?"],
    "feedback": ["Just wanted to say the {p} is excellent, thank you!",
                 "Your support team was very kind when I asked about the {p}.",
                 "Suggestion: please sell the {p} in more colours.",
                 "I have used the {p} for {k} weeks and I love it.",
                 "The packaging of the {p} was wasteful, please use less plastic."],
}


def tickets(r: random.Random, n_train: int, n_test: int):
    labels = list(TICKETS)

    def draw_for(label):
        text = r.choice(TICKETS[label]).format(p=r.choice(PRODUCTS), k=r.randint(2, 30), n=r.choice(NAMES).lower())
        return text, {"text": text, "label": label}

    per_train, per_test = n_train // len(labels), n_test // len(labels)
    train, test = [], []
    for label in labels:  # balanced: the same number of rows per label
        a, b = _split_unique(r, lambda: draw_for(label), per_train, per_test)
        train += a
        test += b
    r.shuffle(train)
    r.shuffle(test)
    return train, test


# --- describe: 100+ token answers ----------------------------------------------------------------------------
KINDS = {"desk lamp": "late evenings of reading and work", "backpack": "daily commutes and weekend trips",
         "kettle": "quick cups of tea and coffee", "office chair": "long days at the desk",
         "speaker": "music in every room of the house", "tent": "nights under the stars",
         "blender": "smoothies, soups and sauces"}
COLOURS = ["brass", "matte black", "forest green", "sand", "navy blue", "white", "copper"]
FEATURES = {"a USB port": "you can charge your phone at the same time",
            "touch control": "one tap is all it takes",
            "a two-year battery": "you will rarely think about power",
            "water resistance": "a little rain is no problem",
            "quiet operation": "it never disturbs the people around you",
            "recycled materials": "it is kinder to the planet",
            "a foldable frame": "it packs away in seconds",
            "app control": "you can adjust it from your phone"}
NAMES_PRODUCT = ["Aurora", "Nimbus", "Vega", "Orbit", "Pico", "Atlas", "Lumen", "Terra", "Zephyr", "Nova", "Echo",
                 "Halo"]


def describe(r: random.Random, n_train: int, n_test: int):
    def draw():
        name, kind, colour = r.choice(NAMES_PRODUCT), r.choice(list(KINDS)), r.choice(COLOURS)
        weight = r.choice([0.4, 0.8, 1.2, 1.5, 2.3, 3.1, 4.6])
        f1, f2 = r.sample(list(FEATURES), 2)
        specs = f"name: {name}\ntype: {kind}\ncolour: {colour}\nweight: {weight} kg\nfeatures: {f1}; {f2}"
        text = (f"Meet the {name}, a {colour} {kind} made for {KINDS[kind]}. At {weight} kg it is "
                f"{'light enough to carry anywhere' if weight < 2 else 'solid and stable wherever you put it'}. "
                f"It comes with {f1}, so {FEATURES[f1]}, and {f2}, so {FEATURES[f2]}. The {colour} finish suits "
                f"any home, and every part of the {name} can be replaced if it ever wears out. Each {kind} ships "
                f"with a two-year warranty. Order the {name} today and see why our customers love it so much.")
        return specs, {"prompt": f"Write a product description from these specs.\n{specs}", "completion": text}
    return _split_unique(r, draw, n_train, n_test)


# --- issue 23's harder tasks: the base scores low, a tuned model can get most but not all right ---------------
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_ASKS = ["Write the number {n} in words.", "Spell out {n} in English words.", "How do you write {n} in words?"]


def in_words(n: int) -> str:
    """American English, no "and", hyphenated tens: 4372 -> "four thousand three hundred seventy-two"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return ONES[n // 100] + " hundred" + (" " + in_words(n % 100) if n % 100 else "")
    return in_words(n // 1000) + " thousand" + (" " + in_words(n % 1000) if n % 1000 else "")


def numwords(r: random.Random, n_train: int, n_test: int):
    """Multi-token exact answers: a number from 1,000 to 99,999 spelled out; every word must be right."""
    def draw():
        n = r.randrange(1000, 100_000)
        return str(n), {"prompt": r.choice(NUMBER_ASKS).format(n=f"{n:,}"), "completion": in_words(n)}
    return _split_unique(r, draw, n_train, n_test)


HOURS = ["twelve", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
PAST = {0: "{h} o'clock", 5: "five past {h}", 10: "ten past {h}", 15: "quarter past {h}", 20: "twenty past {h}",
        25: "twenty-five past {h}", 30: "half past {h}", 35: "twenty-five to {h}", 40: "twenty to {h}",
        45: "quarter to {h}", 50: "ten to {h}", 55: "five to {h}"}
TIME_LEADS = ["Meet me at", "The train leaves at", "Dinner is at", "The call starts at", "We open at"]


def _day_part(hour24: int) -> str:
    return ("in the morning" if 5 <= hour24 < 12 else "in the afternoon" if 12 <= hour24 < 17 else
            "in the evening" if 17 <= hour24 < 21 else "at night")


def clock(r: random.Random, n_train: int, n_test: int):
    """Small set (150 rows): a spoken time ("twenty to eight in the evening") -> 24-hour HH:MM; "to" names the
    next hour and the part of day decides the 12-hour shift."""
    def draw():
        hour24, minute = r.randrange(24), 5 * r.randrange(12)
        named = (hour24 + (1 if minute > 30 else 0)) % 12
        phrase = f"{PAST[minute].format(h=HOURS[named])} {_day_part(hour24)}"
        return f"{hour24:02d}:{minute:02d}", {"prompt": f"{r.choice(TIME_LEADS)} {phrase}. Write that time as "
                                              "24-hour HH:MM.", "completion": f"{hour24:02d}:{minute:02d}"}
    return _split_unique(r, draw, n_train, n_test)


AREA_CUES = {"billing": ["my last invoice", "the charge on my card", "the amount I was billed", "my subscription fee",
                         "the payment I made on Monday", "a refund I was promised"],
             "technical": ["the mobile app", "the sync between my devices", "the export to PDF", "the login page",
                           "the search box", "the dashboard charts"]}
INTENT_CUES = {"question": ["Could you tell me how this is supposed to work?", "Is there a way to check this myself?",
                            "What should I do next?", "Can you explain what this means?",
                            "Who can I ask about it?", "Where do I find more about this?"],
               "complaint": ["This is the third time and I am fed up.", "Frankly this is unacceptable.",
                             "I am really disappointed with your service.", "Nobody has fixed it and I am angry.",
                             "I expected much better than this.", "This has wasted hours of my time."]}
FILLER = ["I have been a customer for a few years.", "I am writing from my work account.",
          "My colleague mentioned the same thing last week.", "I tried again this morning.",
          "I noticed it after the last update.", "Our team uses the product every day.",
          "I read the help pages first.", "It happened on both of my laptops."]


def routing(r: random.Random, n_train: int, n_test: int):
    """4 labels (area x intent) that need the whole message: the area is named in the first sentence, the
    intent only in the last, with neutral sentences between. Training sees four of the six phrasings of each
    cue; test rows may use all six, so a model must generalise from the cue's meaning, not memorise it."""
    labels = [f"{a}_{i}" for a in AREA_CUES for i in INTENT_CUES]

    def message(label: str, test: bool) -> tuple[str, dict]:
        area, intent = label.split("_")
        pool = slice(None) if test else slice(0, 4)
        first = f"Hello, I have a problem with {r.choice(AREA_CUES[area][pool])}."
        middle = " ".join(r.sample(FILLER, 2))
        text = f"{first} {middle} {r.choice(INTENT_CUES[intent][pool])}"
        return text, {"text": text, "label": label}

    train, test = [], []
    for label in labels:
        a, _ = _split_unique(r, lambda: message(label, False), n_train // len(labels), 0)
        seen = {row["text"] for row in a}
        b, _ = _split_unique(r, lambda: (lambda t: (t[0] if t[0] not in seen else "dup", t[1]))(message(label, True)),
                             n_test // len(labels) + 1, 0)
        train += a
        test += [row for row in b if row["text"] not in seen][:n_test // len(labels)]
    r.shuffle(train)
    r.shuffle(test)
    return train, test


TASKS = {t.name: t for t in [
    Task("dates", "short exact answer", "exact_match", 200, 60, 24, dates),
    Task("extract", "format conversion / extraction", "exact_match", 200, 60, 48, extract),
    Task("sentiment", "classification, 2 labels", "accuracy", 200, 300, 8, sentiment),
    Task("tickets", "classification, 7 labels", "accuracy", 210, 105, 8, tickets),
    Task("describe", "long answer (100+ tokens)", "rougeL", 200, 30, 200, describe),
    Task("numwords", "multi-token exact answer", "exact_match", 240, 60, 24, numwords),
    Task("routing", "classification, 4 labels, whole text", "accuracy", 200, 100, 8, routing),
    Task("clock", "short exact answer, small set (150 rows)", "exact_match", 150, 60, 8, clock),
]}
HARD = ("numwords", "routing", "clock")  # issue 23: the bench's default tasks (the first five saturate at >= 0.98)


def make(task: Task, n_train: int | None = None, n_test: int | None = None) -> tuple[list[dict], list[dict]]:
    """The task's (train, test) rows; smaller n_* give a prefix-independent, still-seeded subset."""
    r = random.Random(f"{SEED}-{task.name}")
    train, test = task.make(r, task.n_train, task.n_test)
    return train[:n_train or len(train)], test[:n_test or len(test)]


def write(task: Task, folder: Path, n_train: int | None = None, n_test: int | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, rows in zip(("train", "test"), make(task, n_train, n_test)):
        out[split] = folder / f"{split}.jsonl"
        out[split].write_text("".join(json.dumps(x) + "\n" for x in rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for t in TASKS.values():
        paths = write(t, args.out / t.name)
        print(f"{t.name}: {paths['train']} ({t.n_train}), {paths['test']} ({t.n_test})")


if __name__ == "__main__":
    main()
