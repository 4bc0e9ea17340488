import psycopg2


def get_conn():
    return psycopg2.connect("dbname=test")


def count_rows(table: str) -> int:
    with get_conn() as conn:
        cur = conn.cursor()
        cur.execute(f"select count(*) from {table}")
        return cur.fetchone()[0]


def pure(value: int) -> int:
    return value * 2


def recursive(n: int) -> int:
    return recursive(n - 1) if n else 0
