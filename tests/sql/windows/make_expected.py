#!/usr/bin/env python3
"""Golden expected outputs for Cormorant's window table functions, computed by PostgreSQL.

Writes, next to this script:

  events.csv          the input table `events` (event_id, user_id, kind, amount, occurred_at),
                      exported by PostgreSQL itself (COPY ... TO STDOUT, FORMAT csv, HEADER,
                      TimeZone UTC), so every value is in PostgreSQL's text form;
  <name>.sql          the query in Cormorant SQL (tumble / hop / session table functions);
  <name>.pg.sql       an equivalent PostgreSQL query, written independently of Cormorant's
                      implementation (date_bin, generate_series, NOT EXISTS / window functions);
  <name>.csv          PostgreSQL's result of <name>.pg.sql (COPY (...) TO STDOUT WITH
                      (FORMAT csv, HEADER), with SET TimeZone='UTC', SET extra_float_digits=1).

The data are deterministic (random.Random(20261121)); re-running reproduces the same files.

How to run (needs only python3 and the PostgreSQL server binaries, no psycopg2):

    python3 tests/sql/windows/make_expected.py [--pg-bin /usr/lib/postgresql/15/bin] [--port 55432]

The script starts a throwaway cluster itself: initdb into a fresh temp dir under /tmp,
trust auth, listen_addresses='' (unix socket only, socket dir inside the temp dir), the given
port; it loads the data, runs the queries through `psql`, then stops the server (pg_ctl stop
-m fast) and deletes the temp dir, also on failure. Run as root, the server runs as the
`postgres` OS user (via runuser); as any other user it runs as that user.

Before writing the outputs it cross-checks PostgreSQL's results against a plain-Python
computation of the same windows and a second SQL formulation of sessions (lag/running sum),
and checks the data are interesting (sessions split, hop windows overlap, boundary cases
present). Any mismatch aborts without touching the files.
"""

import argparse
import csv
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261121
START = datetime(2026, 11, 21, 20, 0, 0, tzinfo=timezone.utc)
SPAN = timedelta(hours=3)
USERS = 12
KINDS = [("click", 0.55), ("view", 0.30), ("buy", 0.15)]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)

# --------------------------------------------------------------------------------------------
# data


def _kind(rng):
    r = rng.random()
    acc = 0.0
    for k, p in KINDS:
        acc += p
        if r < acc:
            return k
    return KINDS[-1][0]


def _amount(rng, kind):
    if rng.random() < 0.10:
        return None
    if kind == "buy":
        cents = rng.randint(500, 49999)
    elif kind == "view":
        cents = rng.randint(0, 999)
    else:
        cents = rng.randint(1, 2999)
    return Decimal(cents).scaleb(-2)


def _floor(ts, step):
    """date_bin(step, ts, epoch)"""
    return ts - (ts - EPOCH) % step


def make_events():
    """Deterministic events: per user, bursts with varied gaps so 10-minute sessions split,
    microsecond timestamps, plus deliberate edge cases: rows exactly on 5-minute/1-hour
    boundaries, rows 1 µs before a boundary, consecutive same-user rows exactly 10 minutes
    apart (same session) and 10 minutes + 1 µs apart (new session), and equal timestamps."""
    rng = random.Random(SEED)
    end = START + SPAN
    raw = []  # (ts, user_id)
    for user in range(1, USERS + 1):
        t = START + timedelta(microseconds=rng.randint(0, 8 * 60 * 1_000_000))
        while t < end:
            r = rng.random()
            if r < 0.04:
                t = _floor(t, 5 * MIN)  # exactly on a window boundary
            elif r < 0.07:
                t = _floor(t, 5 * MIN) + 5 * MIN - US  # last microsecond of a window
            raw.append((t, user))
            r = rng.random()
            if r < 0.64:
                gap = timedelta(microseconds=rng.randint(2_000_000, 160_000_000))  # 2 s .. 2.7 min
            elif r < 0.82:
                gap = timedelta(microseconds=rng.randint(200_000_000, 570_000_000))  # .. 9.5 min
            elif r < 0.955:
                gap = timedelta(microseconds=rng.randint(630_000_000, 2_400_000_000))  # 10.5 .. 40 min
            elif r < 0.975:
                gap = 10 * MIN  # exactly the session gap: same session
            elif r < 0.99:
                gap = 10 * MIN + US  # just over the gap: new session
            else:
                gap = timedelta(0)  # same instant twice for one user
            t = t + gap
    # a few timestamps shared across users
    for _ in range(4):
        a, b = rng.sample(range(len(raw)), 2)
        raw[b] = (raw[a][0], raw[b][1])
    raw.sort(key=lambda x: (x[0], x[1]))
    rows = []
    for i, (ts, user) in enumerate(raw, start=1):
        kind = _kind(rng)
        rows.append({"event_id": i, "user_id": user, "kind": kind,
                     "amount": _amount(rng, kind), "occurred_at": ts})
    return rows


def events_input_csv(rows):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["event_id", "user_id", "kind", "amount", "occurred_at"])
    for r in rows:
        w.writerow([r["event_id"], r["user_id"], r["kind"],
                    "" if r["amount"] is None else str(r["amount"]),
                    r["occurred_at"].isoformat(sep=" ")])
    return out.getvalue()


DDL = """CREATE TABLE events (
    event_id    integer PRIMARY KEY,
    user_id     integer NOT NULL,
    kind        text NOT NULL,
    amount      numeric(10,2),
    occurred_at timestamptz NOT NULL
)"""

EXPORT_EVENTS = "SELECT event_id, user_id, kind, amount, occurred_at FROM events ORDER BY event_id"

# --------------------------------------------------------------------------------------------
# queries: name -> (Cormorant SQL, PostgreSQL SQL)

ORIGIN = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"

QUERIES = {
    "tumble_5m": (
        """SELECT window_start, window_end, kind, count(*) AS n, sum(amount) AS total
FROM tumble('events', 'occurred_at', INTERVAL '5 minutes')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
""",
        f"""SELECT date_bin(INTERVAL '5 minutes', occurred_at, {ORIGIN}) AS window_start,
       date_bin(INTERVAL '5 minutes', occurred_at, {ORIGIN}) + INTERVAL '5 minutes' AS window_end,
       kind,
       count(*) AS n,
       sum(amount) AS total
FROM events
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
""",
    ),
    "tumble_1h_where": (
        """SELECT window_start, window_end, count(*) AS n, min(occurred_at) AS first_at, max(amount) AS max_amount
FROM tumble('events', 'occurred_at', INTERVAL '1 hour')
WHERE user_id <= 6
GROUP BY 1, 2
ORDER BY 1, 2;
""",
        f"""SELECT date_bin(INTERVAL '1 hour', occurred_at, {ORIGIN}) AS window_start,
       date_bin(INTERVAL '1 hour', occurred_at, {ORIGIN}) + INTERVAL '1 hour' AS window_end,
       count(*) AS n,
       min(occurred_at) AS first_at,
       max(amount) AS max_amount
FROM events
WHERE user_id <= 6
GROUP BY 1, 2
ORDER BY 1, 2;
""",
    ),
    "hop_5m_15m": (
        """SELECT window_start, window_end, count(*) AS n, sum(amount) AS total
FROM hop('events', 'occurred_at', INTERVAL '5 minutes', INTERVAL '15 minutes')
GROUP BY 1, 2
ORDER BY 1, 2;
""",
        f"""-- every window [s, s + 15 min) with s a multiple of 5 minutes since the epoch, joined to
-- the rows it contains (windows without rows do not appear)
WITH bounds AS (
    SELECT min(occurred_at) AS lo, max(occurred_at) AS hi FROM events
), windows AS (
    SELECT s AS window_start, s + INTERVAL '15 minutes' AS window_end
    FROM bounds,
         generate_series(date_bin(INTERVAL '5 minutes', lo, {ORIGIN}) - INTERVAL '15 minutes',
                         hi, INTERVAL '5 minutes') AS s
)
SELECT w.window_start, w.window_end, count(*) AS n, sum(e.amount) AS total
FROM windows w
JOIN events e ON e.occurred_at >= w.window_start AND e.occurred_at < w.window_end
GROUP BY 1, 2
ORDER BY 1, 2;
""",
    ),
    "hop_10m_25m": (
        """SELECT window_start, window_end, count(*) AS n
FROM hop('events', 'occurred_at', INTERVAL '10 minutes', INTERVAL '25 minutes')
GROUP BY 1, 2
ORDER BY 1, 2;
""",
        f"""-- every window [s, s + 25 min) with s a multiple of 10 minutes since the epoch, joined to
-- the rows it contains (windows without rows do not appear)
WITH bounds AS (
    SELECT min(occurred_at) AS lo, max(occurred_at) AS hi FROM events
), windows AS (
    SELECT s AS window_start, s + INTERVAL '25 minutes' AS window_end
    FROM bounds,
         generate_series(date_bin(INTERVAL '10 minutes', lo, {ORIGIN}) - INTERVAL '30 minutes',
                         hi, INTERVAL '10 minutes') AS s
)
SELECT w.window_start, w.window_end, count(*) AS n
FROM windows w
JOIN events e ON e.occurred_at >= w.window_start AND e.occurred_at < w.window_end
GROUP BY 1, 2
ORDER BY 1, 2;
""",
    ),
    "session_10m_user": (
        """SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total
FROM session('events', 'occurred_at', INTERVAL '10 minutes', 'user_id')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
""",
        """-- a session starts at a time with no earlier row of the same key within the gap;
-- each row belongs to the latest session start at or before it
WITH starts AS (
    SELECT DISTINCT e.user_id, e.occurred_at AS session_start
    FROM events e
    WHERE NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.user_id = e.user_id
          AND p.occurred_at < e.occurred_at
          AND p.occurred_at >= e.occurred_at - INTERVAL '10 minutes')
), tagged AS (
    SELECT e.*,
           (SELECT max(s.session_start) FROM starts s
            WHERE s.user_id = e.user_id AND s.session_start <= e.occurred_at) AS session_start
    FROM events e
)
SELECT user_id,
       min(occurred_at) AS window_start,
       max(occurred_at) + INTERVAL '10 minutes' AS window_end,
       count(*) AS n,
       sum(amount) AS total
FROM tagged
GROUP BY user_id, session_start
ORDER BY 1, 2, 3;
""",
    ),
    "session_10m_user_kind": (
        """SELECT user_id, kind, window_start, window_end, count(*) AS n
FROM session('events', 'occurred_at', INTERVAL '10 minutes', 'user_id', 'kind')
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;
""",
        """-- a session starts at a time with no earlier row of the same key within the gap;
-- each row belongs to the latest session start at or before it
WITH starts AS (
    SELECT DISTINCT e.user_id, e.kind, e.occurred_at AS session_start
    FROM events e
    WHERE NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.user_id = e.user_id AND p.kind = e.kind
          AND p.occurred_at < e.occurred_at
          AND p.occurred_at >= e.occurred_at - INTERVAL '10 minutes')
), tagged AS (
    SELECT e.*,
           (SELECT max(s.session_start) FROM starts s
            WHERE s.user_id = e.user_id AND s.kind = e.kind
              AND s.session_start <= e.occurred_at) AS session_start
    FROM events e
)
SELECT user_id,
       kind,
       min(occurred_at) AS window_start,
       max(occurred_at) + INTERVAL '10 minutes' AS window_end,
       count(*) AS n
FROM tagged
GROUP BY user_id, kind, session_start
ORDER BY 1, 2, 3, 4;
""",
    ),
}

# a second, differently written PostgreSQL formulation of sessions (lag + running sum),
# used only as a cross-check
SESSION_ALT = """WITH flagged AS (
    SELECT *, CASE WHEN occurred_at - lag(occurred_at) OVER w <= INTERVAL '10 minutes'
                   THEN 0 ELSE 1 END AS is_new
    FROM events WINDOW w AS (PARTITION BY {keys} ORDER BY occurred_at, event_id)
), numbered AS (
    SELECT *, sum(is_new) OVER (PARTITION BY {keys} ORDER BY occurred_at, event_id) AS sid
    FROM flagged
)
SELECT {keys}, min(occurred_at) AS window_start,
       max(occurred_at) + INTERVAL '10 minutes' AS window_end, count(*) AS n{total}
FROM numbered GROUP BY {keys}, sid ORDER BY {order}"""

# --------------------------------------------------------------------------------------------
# plain-Python reference (cross-check only)


def pg_ts(ts):
    """timestamptz as PostgreSQL prints it with TimeZone UTC"""
    s = ts.strftime("%Y-%m-%d %H:%M:%S")
    if ts.microsecond:
        s += ("." + "%06d" % ts.microsecond).rstrip("0")
    return s + "+00"


def pg_num(d):
    return "" if d is None else str(d)


def _sum(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals, Decimal("0.00")) if vals else None


def _max(vals):
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def py_expected(rows):
    out = {}
    # tumble
    for name, size, keyf, filt, agg, header in [
        ("tumble_5m", 5 * MIN, lambda r: (r["kind"],), lambda r: True,
         lambda g: [len(g), pg_num(_sum(r["amount"] for r in g))],
         ["window_start", "window_end", "kind", "n", "total"]),
        ("tumble_1h_where", 60 * MIN, lambda r: (), lambda r: r["user_id"] <= 6,
         lambda g: [len(g), pg_ts(min(r["occurred_at"] for r in g)),
                    pg_num(_max(r["amount"] for r in g))],
         ["window_start", "window_end", "n", "first_at", "max_amount"]),
    ]:
        groups = {}
        for r in rows:
            if filt(r):
                s = _floor(r["occurred_at"], size)
                groups.setdefault((s, s + size) + keyf(r), []).append(r)
        out[name] = [header] + [[pg_ts(k[0]), pg_ts(k[1]), *k[2:], *agg(g)]
                                for k, g in sorted(groups.items())]
    # hop: brute force over aligned starts
    for name, slide, size, with_total in [("hop_5m_15m", 5 * MIN, 15 * MIN, True),
                                          ("hop_10m_25m", 10 * MIN, 25 * MIN, False)]:
        groups = {}
        for r in rows:
            t = r["occurred_at"]
            s = _floor(t, slide)
            while s + size > t:
                groups.setdefault(s, []).append(r)
                s -= slide
        header = ["window_start", "window_end", "n"] + (["total"] if with_total else [])
        out[name] = [header] + [
            [pg_ts(s), pg_ts(s + size), len(g)] + ([pg_num(_sum(r["amount"] for r in g))] if with_total else [])
            for s, g in sorted(groups.items())]
    # sessions: sort per key, split where the gap exceeds 10 minutes
    for name, keyf, with_total, header in [
        ("session_10m_user", lambda r: (r["user_id"],), True,
         ["user_id", "window_start", "window_end", "n", "total"]),
        ("session_10m_user_kind", lambda r: (r["user_id"], r["kind"]), False,
         ["user_id", "kind", "window_start", "window_end", "n"]),
    ]:
        by_key = {}
        for r in rows:
            by_key.setdefault(keyf(r), []).append(r)
        result = []
        for key, rs in by_key.items():
            rs.sort(key=lambda r: r["occurred_at"])
            sessions = [[rs[0]]]
            for prev, cur in zip(rs, rs[1:]):
                if cur["occurred_at"] - prev["occurred_at"] > 10 * MIN:
                    sessions.append([])
                sessions[-1].append(cur)
            for g in sessions:
                ws, we = g[0]["occurred_at"], g[-1]["occurred_at"] + 10 * MIN
                result.append((key, ws, we, g))
        result.sort(key=lambda x: (x[0], x[1], x[2]))
        out[name] = [header] + [
            [*k, pg_ts(ws), pg_ts(we), len(g)] + ([pg_num(_sum(r["amount"] for r in g))] if with_total else [])
            for k, ws, we, g in result]
    return {k: [[str(c) for c in row] for row in v] for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# throwaway PostgreSQL cluster


class Cluster:
    def __init__(self, pg_bin, port):
        self.pg_bin = pg_bin
        self.port = port
        self.tmp = tempfile.mkdtemp(prefix="cormorant-pg-", dir="/tmp")
        self.data = os.path.join(self.tmp, "data")
        self.sock = self.tmp
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.tmp, user="postgres", group="postgres")
        self.started = False

    def _server_cmd(self, args):
        cmd = [os.path.join(self.pg_bin, args[0])] + args[1:]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self):
        self._server_cmd(["initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--locale=C", "--no-sync"])
        opts = (f"-p {self.port} -c listen_addresses='' -c unix_socket_directories='{self.sock}' "
                "-c fsync=off")
        self._server_cmd(["pg_ctl", "-D", self.data, "-l", os.path.join(self.tmp, "server.log"),
                          "-o", opts, "-w", "start"])
        self.started = True

    def stop(self):
        try:
            if self.started:
                self._server_cmd(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def psql(self, *commands, stdin=None):
        """Runs each command (a separate -c, all in one session); returns stdout."""
        cmd = [os.path.join(self.pg_bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", self.sock, "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        for c in ["SET TimeZone = 'UTC'", "SET extra_float_digits = 1", *commands]:
            cmd += ["-c", c]
        env = dict(os.environ, PGTZ="UTC")
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout


def copy_out(cluster, query):
    q = query.strip().rstrip(";")
    return cluster.psql(f"COPY ({q}) TO STDOUT WITH (FORMAT csv, HEADER)")


def parse(text):
    return list(csv.reader(io.StringIO(text)))


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--port", type=int, default=55432)
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()

    rows = make_events()
    cluster = Cluster(args.pg_bin, args.port)
    outputs = {}
    try:
        cluster.start()
        version = cluster.psql("COPY (SELECT version()) TO STDOUT").strip()
        cluster.psql(DDL)
        cluster.psql("COPY events FROM STDIN WITH (FORMAT csv, HEADER)", stdin=events_input_csv(rows))
        outputs["events.csv"] = copy_out(cluster, EXPORT_EVENTS)
        for name, (_, pg_sql) in QUERIES.items():
            outputs[f"{name}.csv"] = copy_out(cluster, pg_sql)
        alt = {
            "session_10m_user": copy_out(cluster, SESSION_ALT.format(
                keys="user_id", total=", sum(amount) AS total", order="1, 2, 3")),
            "session_10m_user_kind": copy_out(cluster, SESSION_ALT.format(
                keys="user_id, kind", total="", order="1, 2, 3, 4")),
        }
        boundary_rows = cluster.psql(
            "COPY (SELECT count(*) FILTER (WHERE occurred_at = date_bin('5 minutes', occurred_at, "
            f"{ORIGIN})), count(*) FILTER (WHERE extract(microseconds FROM occurred_at)::bigint % 1000000 <> 0), "
            "count(*) FILTER (WHERE amount IS NULL) FROM events) TO STDOUT").split()
        gaps = cluster.psql(
            "COPY (SELECT count(*) FILTER (WHERE d = INTERVAL '10 minutes'), "
            "count(*) FILTER (WHERE d = INTERVAL '10 minutes 0.000001 seconds') FROM "
            "(SELECT occurred_at - lag(occurred_at) OVER (PARTITION BY user_id ORDER BY occurred_at) AS d "
            "FROM events) x) TO STDOUT").split()
    finally:
        cluster.stop()

    # ---- checks
    problems = []
    expected = py_expected(rows)
    for name in QUERIES:
        got = parse(outputs[f"{name}.csv"])
        if got != expected[name]:
            diff = next((i, a, b) for i, (a, b) in enumerate(zip(got + [None] * 9999, expected[name] + [None] * 9999)) if a != b)
            problems.append(f"{name}: PostgreSQL and the Python reference differ at row {diff[0]}: {diff[1]} vs {diff[2]}")
    for name, text in alt.items():
        if text != outputs[f"{name}.csv"]:
            problems.append(f"{name}: NOT EXISTS and lag formulations differ")
    ev = parse(outputs["events.csv"])
    n_events = len(ev) - 1
    counts = {name: len(parse(outputs[f"{name}.csv"])) - 1 for name in QUERIES}
    hop5 = parse(outputs["hop_5m_15m.csv"])[1:]
    if sum(int(r[2]) for r in hop5) != 3 * n_events:
        problems.append("hop_5m_15m: every row should be in exactly 3 windows")
    hop10 = parse(outputs["hop_10m_25m.csv"])[1:]
    if not (2 * n_events < sum(int(r[2]) for r in hop10) < 3 * n_events):
        problems.append("hop_10m_25m: rows should be in 2 or 3 windows, both occurring")
    sess = parse(outputs["session_10m_user.csv"])[1:]
    per_user = {}
    for r in sess:
        per_user[r[0]] = per_user.get(r[0], 0) + 1
    if len(per_user) != USERS or min(per_user.values()) < 2:
        problems.append(f"session_10m_user: sessions do not split for every user: {per_user}")
    if not any(int(r[3]) == 1 for r in sess) or not any(int(r[3]) >= 5 for r in sess):
        problems.append("session_10m_user: want both singleton and long sessions")
    if int(gaps[0]) == 0 or int(gaps[1]) == 0:
        problems.append(f"edge cases missing: gaps exactly 10 min / 10 min + 1 µs: {gaps}")
    if int(boundary_rows[0]) == 0 or int(boundary_rows[1]) < n_events // 2 or int(boundary_rows[2]) == 0:
        problems.append(f"edge cases missing: boundary/micros/null rows: {boundary_rows}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)

    # ---- write
    os.makedirs(args.out, exist_ok=True)
    for name, (corm_sql, pg_sql) in QUERIES.items():
        with open(os.path.join(args.out, f"{name}.sql"), "w") as f:
            f.write(corm_sql)
        with open(os.path.join(args.out, f"{name}.pg.sql"), "w") as f:
            f.write(pg_sql)
    for fname, text in outputs.items():
        with open(os.path.join(args.out, fname), "w") as f:
            f.write(text)

    print(version)
    print(f"events.csv: {n_events} rows "
          f"({boundary_rows[0]} on 5-minute boundaries, {boundary_rows[1]} with sub-second digits, "
          f"{boundary_rows[2]} NULL amounts; same-user gaps of exactly 10 min: {gaps[0]}, 10 min + 1 µs: {gaps[1]})")
    for name, c in counts.items():
        print(f"{name}.csv: {c} rows")
    print(f"sessions per user: {dict(sorted(per_user.items(), key=lambda kv: int(kv[0])))}")


if __name__ == "__main__":
    main()
