"""Counts the rows of a Delta table a filtered scan returns, with whichever python `deltalake`
runs it — the filter goes through the reader's file skipping, so a file whose statistics do
not bound its values (a decimal minimum written as a float larger than the true minimum) is
wrongly skipped, and statistics an older reader cannot parse fail the scan.

usage: filter_delta.py TABLE_URI COLUMN OP VALUE_KIND VALUE
  VALUE_KIND: decimal | timestamp (ISO 8601 with zone)
prints: the deltalake version, then the row count
"""
import datetime
import decimal
import os
import sys

import pyarrow.dataset as ds
import deltalake
from deltalake import DeltaTable


def main():
    uri, column, op, kind, raw = sys.argv[1:6]
    value = decimal.Decimal(raw) if kind == "decimal" else datetime.datetime.fromisoformat(raw)
    dt = DeltaTable(uri)
    if "deletionVectors" in (dt.protocol().reader_features or []):
        # pyarrow datasets cannot apply deletion vectors; the query engine prunes files by
        # their statistics too (deltalake 1.x only: 0.25 cannot read such tables at all)
        from deltalake import QueryBuilder

        literal = f"CAST('{raw}' AS DECIMAL(38, 10))" if kind == "decimal" else f"CAST('{raw}' AS TIMESTAMP)"
        sql = f"SELECT count(*) AS n FROM t WHERE {column} {op.replace('==', '=')} {literal}"
        rows = QueryBuilder().register("t", dt).execute(sql).read_all().column("n")[0].as_py()
    else:
        field = ds.field(column)
        expr = {"<=": field <= value, ">=": field >= value, "==": field == value}[op]
        # the dataset prunes files by their add statistics before reading them
        rows = dt.to_pyarrow_dataset().to_table(filter=expr).num_rows
    print(deltalake.__version__)
    print(rows)
    sys.stdout.flush()
    os._exit(0)


main()
