#!/usr/bin/env python3
"""Golden expected rows for the views of views.toml at every marked point of the fixture,
computed by PostgreSQL.

For each point (expected/point1..3, final) of tests/fixtures/debezium this loads that point's
`orders.csv` (the table state PostgreSQL dumped during the capture) into a throwaway
PostgreSQL cluster, runs for each view an equivalent PostgreSQL query written here without
looking at Cormorant's implementation (date_bin; generate_series for hop windows; NOT EXISTS
for session starts), and writes `<view>.<point>.csv` (COPY ... CSV HEADER, PostgreSQL's text
form, TimeZone UTC) next to this script.

Before writing anything every result is cross-checked against a plain-Python computation of
the same windows; any mismatch aborts without touching the files.

    python3 tests/sql/views/make_expected.py [--pg-bin /usr/lib/postgresql/15/bin] [--port 55433]

Needs python3 >= 3.11 (tomllib) and the PostgreSQL server binaries; the cluster helpers are
those of tests/sql/windows/make_expected.py.
"""

import argparse
import csv
import io
import os
import sys
import tomllib
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "debezium", "expected")
POINTS = ["point1", "point2", "point3", "final"]
sys.path.insert(0, os.path.join(HERE, "..", "windows"))
from make_expected import Cluster, copy_out, parse  # noqa: E402

EPOCH = "TIMESTAMP '1970-01-01 00:00:00'"

# One PostgreSQL query per view of views.toml (same columns, same order, a total ORDER BY).
PG = {
    "orders_per_day": f"""
SELECT date_bin(INTERVAL '1 day', created_at, {EPOCH}) AS window_start,
       date_bin(INTERVAL '1 day', created_at, {EPOCH}) + INTERVAL '1 day' AS window_end,
       count(*) AS orders, sum(quantity) AS units, max(price) AS top_price, min(line_no) AS first_line
FROM orders GROUP BY 1, 2 ORDER BY 1""",
    # every window [s, s + 30 days) with s a multiple of 7 days since the epoch
    "orders_sliding": f"""
WITH bounds AS (SELECT min(created_at) AS lo, max(created_at) AS hi FROM orders),
windows AS (
    SELECT s AS window_start, s + INTERVAL '30 days' AS window_end
    FROM bounds, generate_series(date_bin(INTERVAL '7 days', lo, {EPOCH}) - INTERVAL '35 days',
                                 hi, INTERVAL '7 days') AS s)
SELECT w.window_start, w.window_end, count(*) AS lines, count(DISTINCT o.customer_id) AS customers,
       min(o.price) AS low, sum(o.quantity) AS units
FROM windows w JOIN orders o ON o.created_at >= w.window_start AND o.created_at < w.window_end
GROUP BY 1, 2 ORDER BY 1""",
    # the averages as DataFusion computes them: of integers, their sum as a double over the count;
    # of numeric(12,4), the quotient truncated to 4 more digits
    "orders_weekly": f"""
SELECT date_bin(INTERVAL '7 days', created_at, {EPOCH}) AS window_start,
       date_bin(INTERVAL '7 days', created_at, {EPOCH}) + INTERVAL '7 days' AS window_end,
       count(*) AS lines, sum(quantity) AS units,
       sum(quantity)::float8 / count(quantity)::float8 AS mean_units, sum(price) AS revenue,
       trunc(sum(price) / count(price), 8) AS mean_price
FROM orders WHERE quantity > 1 GROUP BY 1, 2 ORDER BY 1""",
    # a session starts at a line with no earlier line of its customer within the gap
    "customer_sessions": """
WITH starts AS (
    SELECT DISTINCT o.customer_id, o.created_at AS session_start FROM orders o
    WHERE NOT EXISTS (SELECT 1 FROM orders p WHERE p.customer_id = o.customer_id
                        AND p.created_at < o.created_at
                        AND p.created_at >= o.created_at - INTERVAL '60 days')
), tagged AS (
    SELECT o.*, (SELECT max(s.session_start) FROM starts s
                 WHERE s.customer_id = o.customer_id AND s.session_start <= o.created_at) AS session_start
    FROM orders o)
SELECT min(created_at) AS window_start, max(created_at) + INTERVAL '60 days' AS window_end,
       customer_id, count(*) AS lines, sum(quantity) AS units, max(price) AS top_price
FROM tagged GROUP BY customer_id, session_start ORDER BY customer_id, window_start""",
}

DDL = """CREATE TABLE orders (order_id bigint NOT NULL, line_no integer NOT NULL,
    customer_id integer NOT NULL, quantity integer NOT NULL, price numeric(12,4) NOT NULL,
    created_at timestamp NOT NULL, PRIMARY KEY (order_id, line_no))"""


def ts(text):
    return datetime.fromisoformat(text)


def pg_ts(t):
    """PostgreSQL's text of a timestamp without time zone (fraction without trailing zeros)."""
    s = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        s += ("." + f"{t.microsecond:06d}").rstrip("0")
    return s


def float_text(x):
    """PostgreSQL's text of a double (shortest round trip, no trailing .0)."""
    r = repr(x)
    return r[:-2] if r.endswith(".0") else r


def day_floor(t, days):
    epoch = datetime(1970, 1, 1)
    step = timedelta(days=days)
    return epoch + ((t - epoch) // step) * step


def rows_of(groups):
    return [[pg_ts(ws), pg_ts(we), *[str(v) for v in vals]] for (ws, we), vals in sorted(groups.items())]


def py_expected(view, orders):
    """The view over `orders` computed in plain Python, as text rows without a header."""
    if view == "orders_per_day":
        g = defaultdict(list)
        for o in orders:
            s = day_floor(o["t"], 1)
            g[(s, s + timedelta(days=1))].append(o)
        return rows_of({k: [len(v), sum(o["q"] for o in v), max(o["p"] for o in v), min(o["line"] for o in v)]
                        for k, v in g.items()})
    if view == "orders_sliding":
        g = defaultdict(list)
        for o in orders:
            s = day_floor(o["t"], 7)
            while s + timedelta(days=30) > o["t"]:
                g[(s, s + timedelta(days=30))].append(o)
                s -= timedelta(days=7)
        return rows_of({k: [len(v), len({o["c"] for o in v}), min(o["p"] for o in v), sum(o["q"] for o in v)]
                        for k, v in g.items()})
    if view == "orders_weekly":
        g = defaultdict(list)
        for o in orders:
            if o["q"] > 1:
                s = day_floor(o["t"], 7)
                g[(s, s + timedelta(days=7))].append(o)
        return rows_of({k: [len(v), sum(o["q"] for o in v), float_text(sum(o["q"] for o in v) / len(v)),
                            sum(o["p"] for o in v),
                            (sum(o["p"] for o in v) / len(v)).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)]
                           for k, v in g.items()})
    gap = timedelta(days=60)
    out = []
    by_customer = defaultdict(list)
    for o in orders:
        by_customer[o["c"]].append(o)
    for c in sorted(by_customer):
        session = []
        for o in sorted(by_customer[c], key=lambda o: o["t"]) + [None]:
            if session and (o is None or o["t"] - session[-1]["t"] > gap):
                out.append([pg_ts(session[0]["t"]), pg_ts(session[-1]["t"] + gap), str(c), str(len(session)),
                            str(sum(x["q"] for x in session)), str(max(x["p"] for x in session))])
                session = []
            if o is not None:
                session.append(o)
    return out


def load(point):
    with open(os.path.join(FIXTURE, point, "orders.csv"), newline="") as f:
        text = f.read()
    orders = [{"t": ts(r["created_at"]), "q": int(r["quantity"]), "p": Decimal(r["price"]),
               "c": int(r["customer_id"]), "line": int(r["line_no"])}
              for r in csv.DictReader(io.StringIO(text))]
    return text, orders


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--port", type=int, default=55433)
    args = ap.parse_args()
    with open(os.path.join(HERE, "views.toml"), "rb") as f:
        views = [v["name"] for v in tomllib.load(f)["views"]]
    assert sorted(views) == sorted(PG), f"views.toml names {views}, PG queries {sorted(PG)}"
    outputs = {}
    cluster = Cluster(args.pg_bin, args.port)
    try:
        cluster.start()
        cluster.psql(DDL)
        for point in POINTS:
            text, orders = load(point)
            cluster.psql("TRUNCATE orders", "COPY orders FROM STDIN WITH (FORMAT csv, HEADER)", stdin=text)
            for view in views:
                got = copy_out(cluster, PG[view])
                rows = parse(got)
                want = py_expected(view, orders)
                if rows[1:] != want:
                    diff = next((i, a, b) for i, (a, b) in enumerate(zip(rows[1:], want + [None] * len(rows))) if a != b)
                    raise SystemExit(f"{view} at {point}: PostgreSQL and Python disagree at row {diff}")
                outputs[f"{view}.{point}.csv"] = got
                print(f"{view}.{point}: {len(rows) - 1} rows")
    finally:
        cluster.stop()
    for name, text in outputs.items():
        with open(os.path.join(HERE, name), "w", newline="") as f:
            f.write(text)


if __name__ == "__main__":
    main()
