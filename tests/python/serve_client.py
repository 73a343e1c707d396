"""psycopg 3 against `cormorant serve`: typed values over the extended protocol (text and
binary), parameters, prepared statements, and the read-only refusal as psycopg's own error
class. Asserts on its own; prints what it saw.

usage: serve_client.py DSN TABLE        (password in PGPASSWORD)
"""
import datetime
import decimal
import sys

import psycopg


def main():
    dsn, table = sys.argv[1], sys.argv[2]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(
                f"SELECT id, balance, created_at, birth_date, is_active, email FROM {table} "
                "WHERE NOT __deleted AND balance IS NOT NULL AND created_at IS NOT NULL "
                "AND birth_date IS NOT NULL AND is_active IS NOT NULL ORDER BY id LIMIT 3"
            )
            rows = cur.fetchall()
            assert rows, "no rows"
            id_, balance, created, birth, active, email = rows[0]
            assert isinstance(id_, int), type(id_)
            assert isinstance(balance, decimal.Decimal), type(balance)
            assert isinstance(created, datetime.datetime) and created.tzinfo is not None, repr(created)
            assert isinstance(birth, datetime.date), type(birth)
            assert isinstance(active, bool), type(active)
            assert isinstance(email, str), type(email)
            oids = [d.type_code for d in cur.description]
            assert oids == [23, 1700, 1184, 1082, 16, 25], oids
            print(f"binary={binary}: {rows[0]!r} oids {oids}")

        cur = conn.cursor()
        cur.execute("SELECT make_array('a', 'b c', NULL) AS l, decode('deadbeef', 'hex') AS b, 1.5::double AS f")
        l, b, f = cur.fetchone()
        assert l == ["a", "b c", None], l
        assert bytes(b) == bytes.fromhex("deadbeef"), b
        assert f == 1.5
        print(f"list {l!r}, bytea {bytes(b)!r}, float {f!r}")

        # parameters, and a named prepared statement executed again and again
        sql = f"SELECT count(*) FROM {table} WHERE id > %s AND NOT __deleted"
        counts = {cur.execute(sql, (n,), prepare=True).fetchone()[0] for n in (0, 0, 0)}
        assert len(counts) == 1, counts
        everything = cur.execute(f"SELECT count(*) FROM {table} WHERE NOT __deleted").fetchone()[0]
        assert counts == {everything}, (counts, everything)
        print(f"prepared count {counts}")

        try:
            cur.execute(f"DELETE FROM {table}")
            raise AssertionError("a DELETE went through")
        except psycopg.errors.ReadOnlySqlTransaction as e:
            print(f"refused: {e}")


main()
