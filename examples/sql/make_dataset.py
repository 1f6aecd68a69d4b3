"""Generate the bundled text-to-SQL example (a small shop schema) as train/val/test JSONL, deterministically.

Run: `python examples/sql/make_dataset.py [--out DIR]`; every SQL statement is executed in SQLite first.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234
N_TRAIN, N_VAL, N_TEST = 600, 60, 100

COUNTRIES = ["France", "Germany", "Spain", "Italy", "Japan", "Brazil", "Canada", "India", "Kenya", "Mexico",
             "Norway", "Egypt", "Chile", "Poland"]
CATEGORIES = ["books", "toys", "garden", "kitchen", "sports", "music", "games", "tools", "beauty", "office"]
STATUSES = ["pending", "shipped", "delivered", "cancelled", "returned"]
LETTERS = list("ABCDEGJKLMNPRST")
TABLES = {"users": "user", "products": "product", "orders": "order"}
COLUMNS = {"users": ["name", "email", "country", "created_at"],
           "products": ["name", "category", "price", "stock"],
           "orders": ["user_id", "product_id", "quantity", "total", "status"]}


def templates(r: random.Random):
    """Yield (family, prompt, sql) for one random draw of every template family."""
    t = r.choice(list(TABLES))
    yield "select_all", r.choice([f"Show all {t}", f"List every {TABLES[t]}", f"Get all rows from {t}"]), \
        f"SELECT * FROM {t};"
    c1, c2 = r.sample(COLUMNS[t], 2)
    yield "columns", r.choice([f"Show the {c1} and {c2} of all {t}", f"List {c1} and {c2} for every {TABLES[t]}"]), \
        f"SELECT {c1}, {c2} FROM {t};"
    c = r.choice(COUNTRIES)
    yield "where_text", r.choice([f"Show users from {c}", f"Which users live in {c}?", f"List all users in {c}"]), \
        f"SELECT * FROM users WHERE country = '{c}';"
    k = r.choice(CATEGORIES)
    yield "where_text", r.choice([f"List products in the {k} category", f"Show all {k} products"]), \
        f"SELECT * FROM products WHERE category = '{k}';"
    s = r.choice(STATUSES)
    yield "where_text", r.choice([f"Show {s} orders", f"Which orders are {s}?", f"List all orders with status {s}"]), \
        f"SELECT * FROM orders WHERE status = '{s}';"
    n = r.choice([5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250, 500])
    yield "compare", r.choice([f"Find products that cost more than {n}", f"Which products are priced above {n}?"]), \
        f"SELECT * FROM products WHERE price > {n};"
    yield "compare", r.choice([f"Which products have fewer than {n} items in stock?",
                               f"Show names of products with stock below {n}"]), \
        f"SELECT name FROM products WHERE stock < {n};"
    yield "compare", r.choice([f"Show orders with a quantity greater than {n % 20 + 1}",
                               f"Find orders where more than {n % 20 + 1} items were bought"]), \
        f"SELECT * FROM orders WHERE quantity > {n % 20 + 1};"
    m = r.randint(2, 10)
    col, word = r.choice([("price", "most expensive"), ("stock", "best stocked")])
    yield "top_n", r.choice([f"Show the {m} {word} products", f"List the top {m} {word} products"]), \
        f"SELECT * FROM products ORDER BY {col} DESC LIMIT {m};"
    yield "top_n", r.choice([f"Show the {m} largest orders by total", f"List the {m} biggest orders"]), \
        f"SELECT * FROM orders ORDER BY total DESC LIMIT {m};"
    yield "count", r.choice([f"How many {t} are there?", f"Count all {t}"]), f"SELECT COUNT(*) FROM {t};"
    yield "count_where", r.choice([f"How many users are from {c}?", f"Count the users in {c}"]), \
        f"SELECT COUNT(*) FROM users WHERE country = '{c}';"
    yield "count_where", r.choice([f"How many orders are {s}?", f"Count {s} orders"]), \
        f"SELECT COUNT(*) FROM orders WHERE status = '{s}';"
    fn, fword = r.choice([("AVG", "average"), ("MAX", "highest"), ("MIN", "lowest")])
    yield "aggregate", r.choice([f"What is the {fword} price of {k} products?", f"Find the {fword} price in {k}"]), \
        f"SELECT {fn}(price) FROM products WHERE category = '{k}';"
    yield "aggregate", r.choice([f"What is the total revenue of {s} orders?", f"Sum the totals of {s} orders"]), \
        f"SELECT SUM(total) FROM orders WHERE status = '{s}';"
    g_t, g_c, g_w = r.choice([("users", "country", "country"), ("orders", "status", "status"),
                              ("products", "category", "category")])
    yield "group_by", r.choice([f"Count {g_t} per {g_w}", f"How many {g_t} are there in each {g_w}?"]), \
        f"SELECT {g_c}, COUNT(*) FROM {g_t} GROUP BY {g_c};"
    yield "join", r.choice([f"Show the names of users who have {s} orders",
                            f"Which users placed orders that are {s}? Give their names"]), \
        f"SELECT users.name FROM users JOIN orders ON orders.user_id = users.id WHERE orders.status = '{s}';"
    yield "join", r.choice([f"List order ids for products in the {k} category", f"Which orders contain {k} products?"]), \
        f"SELECT orders.id FROM orders JOIN products ON orders.product_id = products.id WHERE products.category = '{k}';"
    yield "join", r.choice([f"Show the emails of users from {c} who ordered something",
                            f"Emails of users in {c} with at least one order"]), \
        f"SELECT DISTINCT users.email FROM users JOIN orders ON orders.user_id = users.id WHERE users.country = '{c}';"
    lo = r.choice([10, 20, 50, 100, 200])
    hi = lo * r.choice([2, 3, 5])
    yield "between", r.choice([f"Find orders with a total between {lo} and {hi}",
                               f"Show orders whose total is from {lo} to {hi}"]), \
        f"SELECT * FROM orders WHERE total BETWEEN {lo} AND {hi};"
    yield "between", r.choice([f"List products priced between {lo} and {hi}", f"Products costing {lo} to {hi}"]), \
        f"SELECT * FROM products WHERE price BETWEEN {lo} AND {hi};"
    a = r.choice(LETTERS)
    yield "like", r.choice([f"Find users whose name starts with {a}", f"Show users with names beginning with {a}"]), \
        f"SELECT * FROM users WHERE name LIKE '{a}%';"
    k1, k2 = r.sample(CATEGORIES, 2)
    yield "in_list", r.choice([f"Show products in the {k1} or {k2} categories", f"List {k1} and {k2} products"]), \
        f"SELECT * FROM products WHERE category IN ('{k1}', '{k2}');"
    c1_, c2_ = r.sample(COUNTRIES, 2)
    yield "in_list", r.choice([f"Show users from {c1_} or {c2_}", f"Which users live in {c1_} or {c2_}?"]), \
        f"SELECT * FROM users WHERE country IN ('{c1_}', '{c2_}');"
    dcol, dword = r.choice([("country", "countries of users"), ("category", "product categories"),
                            ("status", "order statuses")])
    table = {"country": "users", "category": "products", "status": "orders"}[dcol]
    yield "distinct", r.choice([f"List the distinct {dword}", f"What {dword} are there?"]), \
        f"SELECT DISTINCT {dcol} FROM {table};"


def seed_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript((HERE / "schema.sql").read_text())
    r = random.Random(0)
    for i in range(1, 21):
        db.execute("INSERT INTO users VALUES (?,?,?,?,?)", (i, f"{r.choice(LETTERS)}user{i}", f"u{i}@example.com",
                                                           r.choice(COUNTRIES), "2024-01-01"))
        db.execute("INSERT INTO products VALUES (?,?,?,?,?)", (i, f"item{i}", r.choice(CATEGORIES),
                                                              r.randint(1, 500), r.randint(0, 100)))
        db.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?)", (i, r.randint(1, 20), r.randint(1, 20),
                                                                r.randint(1, 20), r.randint(5, 900),
                                                                r.choice(STATUSES), "2024-02-01"))
    return db


def build() -> dict[str, list[dict]]:
    """Unique prompts per template family, drawn round-robin so every family is represented evenly."""
    r = random.Random(SEED)
    families: dict[str, dict[str, str]] = {}
    for _ in range(400):
        for family, prompt, sql in templates(r):
            families.setdefault(family, {}).setdefault(f"Translate to SQL: {prompt}", sql)
    guide = "Translate to SQL: Show all users"
    pools = {f: [(p, s) for p, s in sorted(d.items()) if p != guide] for f, d in sorted(families.items())}
    for pool in pools.values():
        r.shuffle(pool)
    rows: list[dict] = []
    while len(rows) < N_TRAIN + N_VAL + N_TEST - 1 and any(pools.values()):
        for pool in pools.values():
            if pool:
                p, s = pool.pop()
                rows.append({"prompt": p, "completion": s})
    rows = rows[:N_TRAIN + N_VAL + N_TEST - 1]
    r.shuffle(rows)
    test, val = rows[:N_TEST], rows[N_TEST:N_TEST + N_VAL]
    train = [{"prompt": guide, "completion": "SELECT * FROM users;"}] + rows[N_TEST + N_VAL:]
    db = seed_db()
    for split in (train, val, test):
        for row in split:
            db.execute(row["completion"])  # raises on invalid SQL: the generator must never emit it
    return {"train": train, "val": val, "test": test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
