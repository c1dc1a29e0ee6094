"""How long a diagram takes: a generated 100-state machine (and the order example),
building the DOT, rendering with `dot` cold (the bounded subprocess of machines.diagrams,
and the graphviz package's pipe it replaced, for comparison), and served from the cache;
then the bounded path: a 400-state machine over the size cap, and a 100-state machine
`dot` cannot draw in time (the first answer waits for the timeout, the next ones not).

Run: .venv/bin/python bench/diagrams.py   (prints a table; no Django needed)
"""
import random
import statistics
import sys
import time
from pathlib import Path

import graphviz

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machines import diagrams, language  # noqa: E402
from machines.diagrams import DiagramPath, edge_id, render_svg, to_dot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def generated(states: int) -> dict:
    """A chain of review steps: each approves forward, rejects back, times out forward
    after a day, and every fifth one calls out to a service."""
    doc = {"id": f"generated-{states}", "version": 1, "start_at": "s0", "states": {}}
    for i in range(states - 1):
        actions = [
            {"id": "approve", "on": "approve", "state": f"s{i + 1}"},
            {"id": "reject", "on": "reject", "state": f"s{max(0, i - 1)}"},
            {"id": "timeout", "wait": {"seconds": 86400}, "state": f"s{i + 1}"},
        ]
        if i % 5 == 4:
            actions.insert(0, {"id": "check", "when": "ctx.get('check')", "invoke": {
                "call": "io('http.request.json', 'GET', 'https://example.com')",
                "success": {"state": f"s{i + 1}"}, "error": {"state": f"s{i - 1}"}}})
        doc["states"][f"s{i}"] = {"label": f"Review step {i}", "actions": actions}
    doc["states"][f"s{states - 1}"] = {"label": "Done", "return": True}
    return doc


def tangled(states: int) -> dict:
    """Three actions per state to random states: small, and very slow for dot to lay out."""
    pick = random.Random(1)
    doc = {"id": f"tangled-{states}", "version": 1, "start_at": "s0", "states": {}}
    for i in range(states):
        doc["states"][f"s{i}"] = {"actions": [
            {"id": f"a{j}", "on": f"a{j}", "state": f"s{pick.randrange(states)}"}
            for j in range(3)]}
    doc["states"][f"s{states - 1}"] = {"return": True}
    return doc


def path_through(machine, steps: int) -> DiagramPath:
    names = list(machine.states)[: steps + 1]
    return DiagramPath(
        state_visits={name: 1 for name in names},
        edge_steps={edge_id(name, "approve"): (i + 1,) for i, name in enumerate(names[:-1])},
        current=names[-1], status="waiting",
    )


def timed(function, repeat: int) -> tuple[float, float]:
    """Median and best in ms."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs), min(runs)


def measurements(machine, path):
    return [
        ("build DOT", lambda: to_dot(machine)),
        ("render, cold (bounded dot)", lambda: (diagrams.clear_cache(), render_svg(machine))),
        ("render, cold (graphviz.pipe)", lambda: diagrams._inline(graphviz.Source(
            to_dot(machine)).pipe(format="svg", encoding="utf-8"))),
        ("render, cached", lambda: render_svg(machine)),
        ("render with a path, cold", lambda: (diagrams.clear_cache(),
                                              render_svg(machine, path))),
        ("render with a path, cached", lambda: render_svg(machine, path)),
    ]


def unavailable(machine) -> None:
    try:
        render_svg(machine)
    except diagrams.DiagramUnavailable:
        return
    raise AssertionError("drawn, expected too large")


def main():
    order = language.build(language.parse_text((ROOT / "examples/order.yaml").read_text())[0])
    cases = [("order example (9 states)", order, 10),
             ("generated, 100 states", language.build(generated(100)), 7)]
    print(f"{'machine':28} {'what':26} {'median ms':>10} {'best ms':>9}")
    for label, machine, repeat in cases:
        path = path_through(machine, min(20, len(machine.states) - 1))
        rows = measurements(machine, path)
        for what, function in rows:
            median, best = timed(function, repeat if "cached" not in what else 50)
            print(f"{label:28} {what:26} {median:10.1f} {best:9.1f}")
    size = len(render_svg(cases[1][1])) // 1024
    print(f"\nSVG of the 100-state machine: {size} KiB")

    print(f"\nBounded (limits: {diagrams.LIMITS})")
    big = language.build(generated(400))
    median, best = timed(lambda: unavailable(big), 50)
    print(f"{'generated, 400 states':28} {'too large (size cap)':26} {median:10.1f} {best:9.1f}")
    slow = language.build(tangled(100))
    diagrams.clear_cache()
    median, best = timed(lambda: unavailable(slow), 1)
    print(f"{'tangled, 100 states':28} {'timeout, first answer':26} {median:10.1f} {best:9.1f}")
    median, best = timed(lambda: unavailable(slow), 50)
    print(f"{'tangled, 100 states':28} {'timeout, remembered':26} {median:10.1f} {best:9.1f}")
    print(f"dot processes started: {diagrams.dot_runs()}")


if __name__ == "__main__":
    main()
