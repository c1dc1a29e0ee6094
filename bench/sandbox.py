"""How much the sandbox costs per evaluation, against CPython eval() of the same code.

Run: .venv/bin/python bench/sandbox.py   (prints a table; no Django needed)
"""
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from expressions.sandbox import _to_json, evaluate  # noqa: E402
from machines.definition import Expr  # noqa: E402

CTX = {f"k{i}": i for i in range(18)} | {"n": 1, "items": ["a", "b", "c"]}
SCRIPT = """total = 0
for item in ctx['items']:
    total += len(item)
counts = {item: len(item) for item in ctx['items']}
names = sorted(counts)
{**ctx, 'total': total, 'names': names}"""
CASES = {
    "dict(ctx, n=ctx['n'] + 1)": "dict(ctx, n=ctx['n'] + 1)",
    "{**ctx, 'n': ctx['n']+1}": "{**ctx, 'n': ctx['n']+1}",
    "ctx['n'] < 900": "ctx['n'] < 900",
    "x = dict(ctx); x['n'] = 2; x": "x = dict(ctx)\nx['n'] = 2\nx",
    "6-line script": SCRIPT,
}


def per_call(*functions, number: int) -> list[float]:
    """µs per call of each function: the best of 9 runs, the functions taking turns so
    that load on a shared machine falls on all of them alike (the minimum is the run least
    disturbed by it)."""
    best = [float("inf")] * len(functions)
    for _ in range(9):
        for index, function in enumerate(functions):
            best[index] = min(best[index], timeit.timeit(function, number=number))
    return [seconds / number * 1e6 for seconds in best]


def measure(source: str) -> tuple[float, float, float]:
    """µs per evaluation: (sandbox, CPython exec/eval of the same precompiled code, the
    sandbox's check and copy of the result, which is part of its figure)."""
    expr = Expr(path="bench", source=source)
    names = {"ctx": CTX, "input": {}}
    *body, last = source.splitlines()
    statements = compile("\n".join(body), "<bench>", "exec")
    value = compile(last, "<bench>", "eval")

    def native():
        scope = {"ctx": CTX, "input": {}}
        exec(statements, scope)
        return eval(value, scope)

    result = native()
    assert evaluate(expr, names) == result

    def result_check():
        return _to_json(result, 262144) if type(result) not in (bool, int) else result

    return tuple(per_call(lambda: evaluate(expr, names), native, result_check, number=3000))


def main():
    print(f"{'expression':40} {'sandbox µs':>11} {'eval() µs':>10} {'ratio':>7}"
          f" {'of which result check µs':>25}")
    for label, source in CASES.items():
        sandboxed, plain, checking = measure(source)
        print(f"{label:40} {sandboxed:11.1f} {plain:10.2f} {sandboxed / plain:6.1f}x"
              f" {checking:25.1f}")


if __name__ == "__main__":
    main()
