"""Reads a Cormorant table with the Python `deltalake` package (an independent Delta reader,
delta-rs's Python build with its own deletion-vector support) and prints its live rows as
PostgreSQL's CSV would show them, so the end-to-end tests can compare them with the fixture.

usage: read_delta.py TABLE_URI "ORDER BY columns" [VERSION]
storage options come as JSON in CORMORANT_STORAGE_OPTIONS.
"""
import datetime
import decimal
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder


def pg_text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        s = v.strftime("%Y-%m-%d %H:%M:%S")
        if v.microsecond:
            s += ("." + f"{v.microsecond:06d}").rstrip("0")
        return s + ("+00" if v.tzinfo is not None else "")
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


def csv_field(f):
    """NULL is an empty unquoted field; an empty string is "" (as PostgreSQL writes them)."""
    if f is None:
        return ""
    if f == "" or any(ch in f for ch in ',"\n\r'):
        return '"' + f.replace('"', '""') + '"'
    return f


def main():
    uri, order = sys.argv[1], sys.argv[2]
    version = int(sys.argv[3]) if len(sys.argv) > 3 else None
    options = json.loads(os.environ.get("CORMORANT_STORAGE_OPTIONS", "{}"))
    dt = DeltaTable(uri, version=version, storage_options=options or None)
    result = QueryBuilder().register("t", dt).execute(f"SELECT * FROM t WHERE NOT __deleted ORDER BY {order}").read_all()
    table = pa.table(result)
    cols = [c for c in table.column_names if not c.startswith("__")]
    print(",".join(csv_field(c) for c in cols))
    for row in table.select(cols).to_pylist():
        print(",".join(csv_field(pg_text(row[c])) for c in cols))
    sys.stdout.flush()
    os._exit(0)  # the extension module can abort in its exit handlers; the output is complete


if __name__ == "__main__":
    main()
