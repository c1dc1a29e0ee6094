"""How much the sandbox costs per evaluation, against CPython eval() of the same code.

Run: .venv/bin/python bench/sandbox.py   (prints a table; no Django needed)
"""
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executions.sandbox import evaluate  # noqa: E402
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


def per_call(function, number: int) -> float:
    """Best of 7 runs, in µs per call (the minimum is the least disturbed by other load)."""
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def measure(source: str) -> tuple[float, float]:
    """µs per evaluation: (sandbox, CPython exec/eval of the same precompiled code)."""
    expr = Expr(path="bench", source=source)
    names = {"ctx": CTX, "input": {}}
    *body, last = source.splitlines()
    statements = compile("\n".join(body), "<bench>", "exec")
    value = compile(last, "<bench>", "eval")

    def native():
        scope = {"ctx": CTX, "input": {}}
        exec(statements, scope)
        return eval(value, scope)

    assert evaluate(expr, names) == native()
    return per_call(lambda: evaluate(expr, names), 3000), per_call(native, 3000)


def main():
    print(f"{'expression':40} {'sandbox µs':>11} {'eval() µs':>10} {'ratio':>7}")
    for label, source in CASES.items():
        sandboxed, plain = measure(source)
        print(f"{label:40} {sandboxed:11.1f} {plain:10.2f} {sandboxed / plain:6.1f}x")


if __name__ == "__main__":
    main()
