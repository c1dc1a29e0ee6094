"""Wall time of `manage.py show_execution` and `trigger`, against the floors of starting Python
and of setting Django up with the project's settings, in the same run.

    .venv/bin/python bench/cli.py                  # a temporary SQLite database, 15 runs each
    .venv/bin/python bench/cli.py --runs 30
    .venv/bin/python bench/cli.py --database-url postgres://postgres@127.0.0.1:5432/dm_bench_cli

Each command is a fresh process, as when typed (like hyperfine): the figure is what a person
waits. Runs are interleaved (floor, setup, show, trigger, floor, ...) so load on a shared
machine falls on all alike. Bytecode is written and read as in a normal install (a
PYTHONDONTWRITEBYTECODE in the environment is dropped for the children).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5


def run(argv, env) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
        env["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp}/bench-cli.sqlite3"
        env["DJANGO_SETTINGS_MODULE"] = "workflow_site.settings"
        manage = [python, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "load_machines", "examples"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        started = subprocess.run([*manage, "start_execution", "order"], cwd=ROOT, env=env,
                                 check=True, capture_output=True, text=True).stdout
        execution = started.split("execution ", 1)[1].split()[0]
        commands = {
            "python -c pass (floor)": [python, "-c", "pass"],
            "django.setup(), project settings (floor)": [
                python, "-c", "import django; django.setup()"],
            "manage.py show_execution": [*manage, "show_execution", execution[:8]],
            "manage.py trigger (add, waits)": [
                *manage, "trigger", execution[:8], "add", "--input", '{"sku": "x9"}'],
        }
        for argv in commands.values():  # warm: bytecode written, files in the page cache
            run(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(run(argv, env))
    engine = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
    print(f"manage.py wall time, {engine}, {args.runs} runs each, interleaved")
    print(f"{'command':44} {'min s':>7} {'median s':>9} {'max s':>7}  target")
    for name, values in times.items():
        median = statistics.median(values)
        target = "" if "floor" in name else (
            f"<{TARGET_S} s: {'met' if median < TARGET_S else 'missed'}")
        print(f"{name:44} {min(values):7.3f} {median:9.3f} {max(values):7.3f}  {target}")


if __name__ == "__main__":
    main()
