# SQLAlchemy 2 + psycopg 3 + pandas against a running Strata server, as an
# application would use them. Run by tests/it/clients.rs; by hand:
#   python3 tests/it/sqlalchemy_client.py PORT
# Prints one line per check; the Rust test compares them.
import sys

import pandas as pd
import sqlalchemy as sa

port = int(sys.argv[1])
engine = sa.create_engine(f"postgresql+psycopg://admin@127.0.0.1:{port}/strata")

# engine.connect() runs the dialect's first-connect queries (version(),
# current_schema(), standard_conforming_strings, isolation level, hstore lookup).
with engine.connect() as conn:
    print("server_version_info", ".".join(map(str, engine.dialect.server_version_info)))
    print("default_schema", engine.dialect.default_schema_name)
    info = conn.connection.driver_connection.info
    # libpq's view, from the server_version parameter sent at startup.
    print("parameter_status", info.parameter_status("server_version"), info.server_version)
    conn.exec_driver_sql(
        "CREATE TABLE t (ts TIMESTAMP, sym SYMBOL, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY"
    )
    conn.execute(
        sa.text("INSERT INTO t VALUES (:ts, :sym, :price)"),
        [
            {"ts": "2024-01-15T10:00:00", "sym": "BTC", "price": 42000.5},
            {"ts": "2024-01-16T11:30:00", "sym": "ETH", "price": 2500.25},
        ],
    )
    conn.commit()
    print("count", conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one())

inspector = sa.inspect(engine)
print("tables", sorted(inspector.get_table_names()))
print("columns", [c["name"] for c in inspector.get_columns("t")])

df = pd.read_sql("SELECT ts, sym, price FROM t ORDER BY ts", engine)
for row in df.itertuples(index=False):
    print("row", row.ts.isoformat(), row.sym, row.price)
