"""What the benchmarks that run one child process per database share: the child's run,
its results line, and a fresh PostgreSQL database for it."""
import json
import os
import subprocess
import sys

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def run_child(script, label, database_url, argv, cwd):
    """Run `script --child argv` against `database_url`; the dict it printed as RESULTS."""
    env = {**os.environ, "DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, str(script), "--child", *argv], env=env, cwd=cwd,
                         capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULTS "):
            return json.loads(line[len("RESULTS "):])
    raise RuntimeError(f"{label} benchmark failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def fresh_postgres_database(name):
    """The URL of an empty database `name` (dropped and created), or None without
    PostgreSQL."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"(PostgreSQL not reachable: {exc}; SQLite only)")
        return None
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
