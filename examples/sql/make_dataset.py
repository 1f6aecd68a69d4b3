"""Seeded generator of the bundled text-to-SQL example (shop schema) as train/val/test JSONL; all SQL runs in SQLite.
Run: `python examples/sql/make_dataset.py [--out DIR]` (default DIR: this folder); same seed, same bytes."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sqlite3
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234
N_TRAIN, N_VAL, N_TEST = 600, 60, 100
PREFIX = "Translate to SQL: "
GUIDE = {"prompt": PREFIX + "Show all users", "completion": "SELECT * FROM users;"}  # the README's own row
TEST_KEYS, VAL_KEYS = 0.2, 0.1  # share of each large template's value combinations held out of training

COUNTRIES = ["France", "Germany", "Spain", "Italy", "Japan", "Brazil", "Canada", "India", "Kenya", "Mexico",
             "Norway", "Egypt", "Chile", "Poland"]
CATEGORIES = ["garden", "kitchen", "sports", "music", "office", "beauty", "toy", "electronics", "clothing", "pet"]
STATUSES = ["pending", "shipped", "delivered", "cancelled", "returned"]
NAMES = ["Alice", "Bruno", "Chen", "Diana", "Emma", "Farid", "Grace", "Hiro", "Ingrid", "Jamal", "Kofi", "Lena",
         "Mateo", "Nadia", "Omar", "Priya"]
PRODUCTS = ["desk lamp", "yoga mat", "coffee mug", "board game", "garden hose", "notebook", "headset", "lipstick",
            "stapler", "dog bed", "tent", "backpack"]
LETTERS = list("ABCDEFGHJKLMNPRST")
PRICES = [5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 150, 200, 250, 500]
STOCKS = [2, 3, 5, 10, 15, 20, 25, 30, 50]
QUANTITIES = [1, 2, 3, 4, 5, 6, 8, 10]
TOTALS = [20, 50, 75, 100, 150, 200, 300, 500, 1000]
RANGES = [(lo, lo * k) for lo in (10, 20, 50, 100, 200) for k in (2, 3, 5)]
DATES = [f"{y}-{m:02d}-01" for y in (2023, 2024) for m in range(1, 13)]
ONE = {"users": "user", "products": "product", "orders": "order"}
# Natural words for columns (created_at reads differently per table; the model must learn both).
COLS = {"users": {"name": "name", "email": "email", "country": "country", "signup date": "created_at"},
        "products": {"name": "name", "category": "category", "price": "price", "stock": "stock"},
        "orders": {"quantity": "quantity", "total": "total", "status": "status", "order date": "created_at"}}
KEYWORDS = {"select", "from", "where", "and", "or", "order", "by", "desc", "asc", "limit", "count", "avg", "sum",
            "max", "min", "group", "join", "on", "between", "like", "in", "distinct", "as", "not"}


@dataclass(frozen=True)
class Kind:
    """One SQL shape with its English phrasings; `values` are the slot fillings (one per value combination)."""

    phrasings: tuple[str, ...]
    sql: str
    values: tuple[dict, ...]


def kind(phrasings: list[str], sql: str, values: list[dict]) -> Kind:
    return Kind(tuple(phrasings), sql, tuple(values))


def templates() -> dict[str, list[Kind]]:
    """The question templates, in a fixed order (the order is part of what the seed reproduces)."""
    tables = [{"t": t, "one": ONE[t]} for t in ONE]
    fn_words = [("AVG", "average"), ("MAX", "highest"), ("MIN", "lowest")]
    return {
        "select_all": [kind(["Show all {t}", "List every {one}", "Get all rows from the {t} table"],
                            "SELECT * FROM {t};", tables)],
        "select_columns": [kind(["Show the {a} and {b} of all {t}", "List {a} and {b} for every {one}",
                                 "Get each {one}'s {a} and {b}"], "SELECT {ca}, {cb} FROM {t};",
                                [{"t": t, "one": ONE[t], "a": a, "b": b, "ca": COLS[t][a], "cb": COLS[t][b]}
                                 for t in COLS for a, b in permutations(COLS[t], 2)])],
        "where_text": [
            kind(["Show users from {v}", "Which users live in {v}?", "List all users in {v}"],
                 "SELECT * FROM users WHERE country = '{v}';", [{"v": c} for c in COUNTRIES]),
            kind(["List products in the {v} category", "Show all {v} products",
                  "Which products are in the {v} category?"],
                 "SELECT * FROM products WHERE category = '{v}';", [{"v": k} for k in CATEGORIES]),
            kind(["Show {v} orders", "Which orders are {v}?", "List all orders with status {v}"],
                 "SELECT * FROM orders WHERE status = '{v}';", [{"v": s} for s in STATUSES]),
            kind(["What is the email of {v}?", "Show {v}'s email address", "Find the email of the user named {v}"],
                 "SELECT email FROM users WHERE name = '{v}';", [{"v": n} for n in NAMES]),
            kind(["What is the price of the {v}?", "How much does the {v} cost?", "Show the price of the {v}"],
                 "SELECT price FROM products WHERE name = '{v}';", [{"v": p} for p in PRODUCTS])],
        "where_number": [
            kind(["Show all orders placed by user {n}", "List the orders of user {n}",
                  "Which orders did user {n} make?"],
                 "SELECT * FROM orders WHERE user_id = {n};", [{"n": n} for n in range(1, 31)]),
            kind(["Show the product with id {n}", "Get product number {n}", "Find the product whose id is {n}"],
                 "SELECT * FROM products WHERE id = {n};", [{"n": n} for n in range(1, 31)])],
        "compare": [
            kind(["Find products that cost more than {n}", "Which products are priced above {n}?",
                  "List products with a price over {n}"], "SELECT * FROM products WHERE price > {n};",
                 [{"n": n} for n in PRICES]),
            kind(["Find products that cost less than {n}", "Which products are priced below {n}?",
                  "List products with a price under {n}"], "SELECT * FROM products WHERE price < {n};",
                 [{"n": n} for n in PRICES]),
            kind(["Names of products with fewer than {n} in stock", "Which products have under {n} units in stock?",
                  "List the names of products whose stock is below {n}"],
                 "SELECT name FROM products WHERE stock < {n};",
                 [{"n": n} for n in STOCKS]),
            kind(["Show orders with a total above {n}", "Find orders worth more than {n}",
                  "List orders whose total exceeds {n}"], "SELECT * FROM orders WHERE total > {n};",
                 [{"n": n} for n in TOTALS]),
            kind(["Show orders with more than {n} items", "Find orders where the quantity is over {n}",
                  "Which orders have a quantity greater than {n}?"], "SELECT * FROM orders WHERE quantity > {n};",
                 [{"n": n} for n in QUANTITIES])],
        "dates": [
            kind(["Show users who signed up after {d}", "Which users joined after {d}?",
                  "List users created after {d}"], "SELECT * FROM users WHERE created_at > '{d}';",
                 [{"d": d} for d in DATES]),
            kind(["Show orders placed before {d}", "Which orders were made before {d}?", "List orders older than {d}"],
                 "SELECT * FROM orders WHERE created_at < '{d}';", [{"d": d} for d in DATES])],
        "top_n": [kind(["Show the {m} {what}", "List the top {m} {what}", "What are the {m} {what}?"],
                       "SELECT * FROM {t} ORDER BY {c} DESC LIMIT {m};",
                       [{"m": m, "what": w, "t": t, "c": c} for w, t, c in
                        [("most expensive products", "products", "price"), ("products with the most stock",
                         "products", "stock"), ("largest orders", "orders", "total"),
                         ("orders with the most items", "orders", "quantity")] for m in range(2, 11)])],
        "count_all": [kind(["How many {t} are there?", "Count all {t}", "What is the total number of {t}?"],
                           "SELECT COUNT(*) FROM {t};", tables)],
        "count_where": [
            kind(["How many users are from {v}?", "Count the users in {v}",
                  "What is the number of users living in {v}?"],
                 "SELECT COUNT(*) FROM users WHERE country = '{v}';", [{"v": c} for c in COUNTRIES]),
            kind(["How many orders are {v}?", "Count the {v} orders", "What is the number of {v} orders?"],
                 "SELECT COUNT(*) FROM orders WHERE status = '{v}';", [{"v": s} for s in STATUSES]),
            kind(["How many products are in the {v} category?", "Count the {v} products",
                  "What is the number of {v} products?"], "SELECT COUNT(*) FROM products WHERE category = '{v}';",
                 [{"v": k} for k in CATEGORIES])],
        "aggregate": [
            kind(["What is the {w} price of {k} products?", "Find the {w} price in the {k} category",
                  "Give the {w} price among {k} products"], "SELECT {f}(price) FROM products WHERE category = '{k}';",
                 [{"f": f, "w": w, "k": k} for f, w in fn_words for k in CATEGORIES]),
            kind(["What is the {w} product price?", "Find the {w} price of all products",
                  "Give the {w} price across all products"], "SELECT {f}(price) FROM products;",
                 [{"f": f, "w": w} for f, w in fn_words]),
            kind(["What is the total revenue of {s} orders?", "Sum the totals of {s} orders",
                  "How much money did {s} orders bring in?"], "SELECT SUM(total) FROM orders WHERE status = '{s}';",
                 [{"s": s} for s in STATUSES]),
            kind(["How many items were bought in {s} orders?", "Sum the quantity of {s} orders",
                  "What is the total quantity of {s} orders?"],
                 "SELECT SUM(quantity) FROM orders WHERE status = '{s}';",
                 [{"s": s} for s in STATUSES])],
        "group_by": [kind(["Count {t} per {w}", "How many {t} are there for each {w}?",
                           "Give the number of {t} by {w}"], "SELECT {c}, COUNT(*) FROM {t} GROUP BY {c};",
                          [{"t": t, "w": w, "c": c} for t, w, c in
                           [("users", "country", "country"), ("orders", "status", "status"),
                            ("products", "category", "category"), ("orders", "user", "user_id"),
                            ("orders", "product", "product_id")]])],
        "join_users_orders": [
            kind(["Show the names of users who have {v} orders", "Which users have {v} orders? Give their names",
                  "List names of users with a {v} order"], "SELECT DISTINCT users.name FROM users JOIN orders "
                 "ON orders.user_id = users.id WHERE orders.status = '{v}';", [{"v": s} for s in STATUSES]),
            kind(["Show the ids of orders placed by users from {v}", "List order ids of customers in {v}",
                  "Which orders were made by users in {v}? Give ids"], "SELECT orders.id FROM orders JOIN users "
                 "ON orders.user_id = users.id WHERE users.country = '{v}';", [{"v": c} for c in COUNTRIES]),
            kind(["Show the order totals of {v}", "List the totals of orders placed by {v}",
                  "What are the totals of {v}'s orders?"], "SELECT orders.total FROM orders JOIN users "
                 "ON orders.user_id = users.id WHERE users.name = '{v}';", [{"v": n} for n in NAMES])],
        "join_orders_products": [
            kind(["List order ids for products in the {v} category", "Which orders contain {v} products? Give ids",
                  "Show the ids of orders for {v} items"], "SELECT orders.id FROM orders JOIN products "
                 "ON orders.product_id = products.id WHERE products.category = '{v}';",
                 [{"v": k} for k in CATEGORIES]),
            kind(["Which products are in {v} orders? Give names", "Show the names of products in {v} orders",
                  "List names of products that have {v} orders"], "SELECT DISTINCT products.name FROM products JOIN "
                 "orders ON orders.product_id = products.id WHERE orders.status = '{v}';",
                 [{"v": s} for s in STATUSES]),
            kind(["List the ids of orders for the {v}", "Show the order ids for the {v}",
                  "Which orders include the {v}?"],
                 "SELECT orders.id FROM orders JOIN products ON orders.product_id = products.id "
                 "WHERE products.name = '{v}';", [{"v": p} for p in PRODUCTS])],
        "between": [
            kind(["Find orders with a total between {lo} and {hi}", "Show orders whose total is from {lo} to {hi}",
                  "Which orders have totals between {lo} and {hi}?"],
                 "SELECT * FROM orders WHERE total BETWEEN {lo} AND {hi};", [{"lo": a, "hi": b} for a, b in RANGES]),
            kind(["List products priced between {lo} and {hi}", "Show products costing {lo} to {hi}",
                  "Which products cost between {lo} and {hi}?"],
                 "SELECT * FROM products WHERE price BETWEEN {lo} AND {hi};",
                 [{"lo": a, "hi": b} for a, b in RANGES])],
        "like": [
            kind(["Find users whose name starts with {a}", "Show users with names beginning with {a}",
                  "Which users have a name starting with {a}?"], "SELECT * FROM users WHERE name LIKE '{a}%';",
                 [{"a": a} for a in LETTERS]),
            kind(["Find products whose name starts with {a}", "Show products with names beginning with {a}",
                  "Which products have a name starting with {a}?"], "SELECT * FROM products WHERE name LIKE '{a}%';",
                 [{"a": a} for a in LETTERS])],
        "in_list": [
            kind(["Show products in the {a} or {b} categories", "List {a} and {b} products",
                  "Which products are in {a} or {b}?"], "SELECT * FROM products WHERE category IN ('{a}', '{b}');",
                 [{"a": a, "b": b} for a, b in permutations(CATEGORIES, 2)]),
            kind(["Show users from {a} or {b}", "Which users live in {a} or {b}?", "List users in {a} and {b}"],
                 "SELECT * FROM users WHERE country IN ('{a}', '{b}');",
                 [{"a": a, "b": b} for a, b in permutations(COUNTRIES, 2)]),
            kind(["Show orders that are {a} or {b}", "List {a} and {b} orders", "Which orders are {a} or {b}?"],
                 "SELECT * FROM orders WHERE status IN ('{a}', '{b}');",
                 [{"a": a, "b": b} for a, b in permutations(STATUSES, 2)])],
        "distinct": [kind(["List the distinct {w}", "Which {w} are there?", "Show the {w} without duplicates"],
                          "SELECT DISTINCT {c} FROM {t};",
                          [{"w": w, "c": c, "t": t} for w, c, t in
                           [("user countries", "country", "users"), ("product categories", "category", "products"),
                            ("order statuses", "status", "orders"), ("product prices", "price", "products")]])],
    }


def check_canonical(sql: str) -> None:
    """One SQL style, so exact match is meaningful: upper-case keywords, single quotes and spaces, one final `;`."""
    bare = re.sub(r"'[^']*'", "''", sql)
    bad = [w for w in re.findall(r"[A-Za-z_]+", bare) if w.lower() in KEYWORDS and w != w.upper()]
    if bad or '"' in sql or sql != " ".join(sql.split()) or not sql.endswith(";") or sql.count(";") != 1:
        raise ValueError(f"non-canonical SQL: {sql!r} {bad}")


def seed_db() -> sqlite3.Connection:
    """An in-memory shop built from schema.sql with a few rows, so every query really runs (and joins match)."""
    db = sqlite3.connect(":memory:")
    db.executescript((HERE / "schema.sql").read_text())
    r = random.Random(0)
    for i, name in enumerate(NAMES, 1):
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                   (i, name, f"{name.lower()}@example.com", r.choice(COUNTRIES), r.choice(DATES)))
    for i, name in enumerate(PRODUCTS, 1):
        db.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?)",
                   (i, name, r.choice(CATEGORIES), r.choice(PRICES) - 0.01, r.choice(STOCKS)))
    for i in range(1, 41):
        q, price = r.randint(1, 10), r.choice(PRICES)
        db.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", (i, r.randint(1, len(NAMES)), r.randint(
            1, len(PRODUCTS)), q, q * price, r.choice(STATUSES), r.choice(DATES)))
    return db


def candidates() -> dict[str, list[tuple[str, str, tuple, int]]]:
    """Every (prompt, sql, key, phrasing index) per template; key = the value combination, phrasing aside."""
    out: dict[str, list[tuple[str, str, tuple, int]]] = {}
    seen: dict[str, str] = {}
    for name, kinds in templates().items():
        rows = out.setdefault(name, [])
        for ki, k in enumerate(kinds):
            for v in k.values:
                sql = k.sql.format(**v)
                check_canonical(sql)
                for pi, phrasing in enumerate(k.phrasings):
                    prompt = PREFIX + phrasing.format(**v)
                    if prompt in seen:  # one prompt, one answer: a duplicate would leak or contradict
                        raise ValueError(f"prompt generated twice: {prompt!r} -> {seen[prompt]!r} / {sql!r}")
                    if len(prompt.split()) > 20:
                        raise ValueError(f"prompt over 20 words: {prompt!r}")
                    seen[prompt] = sql
                    rows.append((prompt, sql, (ki, tuple(sorted(v.items()))), pi))
    return out


def pools(r: random.Random) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Split each template's candidates into train/val/test pools so no test answer is a memorised one.

    Large templates hold out whole value combinations (test asks for values/SQL never trained on);
    templates with few combinations (select_all, count_all, ...) hold out their last phrasing instead.
    """
    split: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for name, cands in candidates().items():
        keys = list(dict.fromkeys(c[2] for c in cands))
        p: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
        if len(keys) >= 10:
            r.shuffle(keys)
            n_test, n_val = math.ceil(TEST_KEYS * len(keys)), math.ceil(VAL_KEYS * len(keys))
            where = {k: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, k in enumerate(keys)}
            for prompt, sql, key, _ in cands:
                p[where[key]].append((prompt, sql))
        else:
            last = max(c[3] for c in cands)
            for prompt, sql, _, pi in cands:
                p["test" if pi == last else "train"].append((prompt, sql))
            r.shuffle(p["train"])
            p["val"] = [x for x in p["train"] if x[0] != GUIDE["prompt"]][:1]  # one val row; the guide's row trains
            p["train"] = [x for x in p["train"] if x not in p["val"]]
        for rows in p.values():
            rows.sort()
            r.shuffle(rows)
        split[name] = p
    return split


def draw(by_template: list[list[tuple[str, str]]], n: int) -> list[dict]:
    """Take n rows round-robin over templates, so every template is equally represented while it has rows."""
    rows: list[dict] = []
    while len(rows) < n:
        if not any(by_template):
            raise ValueError(f"only {len(rows)} of {n} rows available")
        for pool in by_template:
            if pool and len(rows) < n:
                prompt, sql = pool.pop()
                rows.append({"prompt": prompt, "completion": sql})
    return rows


def build() -> dict[str, list[dict]]:
    """The three splits, shuffled; every completion is executed against the seeded schema before it is returned."""
    r = random.Random(SEED)
    split = pools(r)
    train_pools = [[x for x in p["train"] if x[0] != GUIDE["prompt"]] for p in split.values()]
    out = {"train": [GUIDE] + draw(train_pools, N_TRAIN - 1),
           "val": draw([p["val"] for p in split.values()], N_VAL),
           "test": draw([p["test"] for p in split.values()], N_TEST)}
    db = seed_db()
    for rows in out.values():
        r.shuffle(rows)
        for row in rows:
            db.execute(row["completion"]).fetchall()  # raises sqlite3.Error on invalid SQL: fail loudly
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        (args.output / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        print(f"{name}: {len(rows)} rows -> {args.output / f'{name}.jsonl'}")


if __name__ == "__main__":
    main()
