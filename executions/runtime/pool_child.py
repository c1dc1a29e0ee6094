"""The evaluation process of the pool (executions/runtime/pool.py): pure code only.

This module is the child's whole program. It imports the pure core (the engine, the
language, the sandbox) and the standard library, never Django: a child must not inherit or
open a database connection, and nothing user-written runs in the web or worker process.
`tests/test_architecture.py` checks that its imports stay in the pure core.

Protocol: requests on stdin, each a `marshal`led dict after its length (FRAME): from the
parent, which the child trusts, and about four times cheaper to read than JSON; one reply
per line on stdout, JSON (the parent trusts nothing of the child's, and reads only JSON).

- `{"op": "compute", ...}`: one whole engine computation for one execution (the lead event,
  Start or Continue, then the inbox items' events), as `compute()` below. The machine is
  sent by key; the child answers `{"miss": true}` when it does not hold it, and the parent
  sends it again with the document. Reply: the snapshot, the history entries, the effects
  (as data), and per event whether it was rejected and how many history entries it made.
- `{"op": "call", ...}`: an `invoke.call` expression with `io()` bound; IO operations are
  resolved by dotted path here, in the child; mocks are expressions.

Before each evaluation the child writes into a shared page (a memfd the parent mapped too)
the wall-clock time it started, the index of the event and the expression's path: when the
child has to be killed (past its time limit), crashes or runs out of memory, the parent
reads from there which expression it was in.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import json
import marshal
import mmap
import os
import resource
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import fields
from typing import Any

from executions import engine
from expressions import sandbox
from expressions.errors import ExpressionError, RaisedError
from machines.definition import Expr
from machines.language import build

# The shared status page ------------------------------------------------------------------
STATUS_SIZE = 4096
_HEADER = struct.Struct("<dii")  # started (CLOCK_MONOTONIC s, 0 = idle), event index, path len
STATUS_HEADER = _HEADER.size
_MAX_PATH = STATUS_SIZE - _HEADER.size - 8  # the rest: the path, then the IO operation
MACHINE_CACHE = 64  # machine definitions kept by content key
FRAME = struct.Struct("<I")  # the length of a request, before it


class Status:
    """What the child is doing, where its parent can read it even after it died."""

    def __init__(self, page: mmap.mmap | None):
        self.page = page
        self.index = 0
        self._encoded: dict[str, bytes] = {}

    def begin(self, path: str | None) -> None:
        page = self.page
        if page is None:
            return
        raw = self._encoded.get(path or "")
        if raw is None:
            raw = (path or "").encode("utf-8", "replace")[:_MAX_PATH]
            if len(self._encoded) < 4096:
                self._encoded[path or ""] = raw
        page[_HEADER.size:_HEADER.size + len(raw)] = raw
        _HEADER.pack_into(page, 0, time.monotonic(), self.index, len(raw))

    def idle(self) -> None:
        if self.page is not None:
            _HEADER.pack_into(self.page, 0, 0.0, 0, 0)


def read_status(page: mmap.mmap) -> tuple[float, int, str]:
    """(started, event index, path) as last written by the child."""
    started, index, length = _HEADER.unpack_from(page, 0)
    length = max(0, min(length, _MAX_PATH))
    path = bytes(page[_HEADER.size:_HEADER.size + length]).decode("utf-8", "replace")
    return started, index, path


# Data codecs (shared with the parent) ----------------------------------------------------
EVENT_TYPES = {cls.__name__: cls for cls in (
    engine.Start, engine.Action, engine.TimerFired, engine.WorkSucceeded, engine.WorkFailed,
    engine.Cancel, engine.Retry, engine.Continue)}
EFFECT_TYPES = {cls.__name__: cls for cls in (
    engine.ArmTimer, engine.CancelTimer, engine.CallIO, engine.StartChild, engine.SendAction,
    engine.CancelWork, engine.NotifyParent, engine.ContinueLater)}


# Each type's fields, read once (dataclasses.fields() works them out on every call)
FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in (*EVENT_TYPES.values(), *EFFECT_TYPES.values())}


def event_data(event: engine.Event) -> dict:
    data = {name: getattr(event, name) for name in FIELD_NAMES[type(event)]}
    data["type"] = type(event).__name__
    return data


def event_from(data: dict) -> engine.Event:
    values = dict(data)
    return EVENT_TYPES[values.pop("type")](**values)


def expr_data(expr: Expr) -> dict:
    return {"path": expr.path, "source": expr.source, "literal": expr.literal}


def effect_data(effect: engine.Effect) -> dict:
    data = {name: getattr(effect, name) for name in FIELD_NAMES[type(effect)]}
    if isinstance(effect, engine.CallIO):
        data["call"] = expr_data(effect.call)
    data["type"] = type(effect).__name__
    return data


def effect_from(data: dict) -> engine.Effect:
    values = dict(data)
    cls = EFFECT_TYPES[values.pop("type")]
    if cls is engine.CallIO:
        values["call"] = Expr(**values["call"])
    return cls(**values)


# One engine computation ------------------------------------------------------------------
def compute(machine, snapshot: engine.Snapshot | None, events: list[engine.Event],
            env: engine.Env, *, lead: int, refuse: bool, status: Status | None = None,
            stop_before: int | None = None) -> dict:
    """The engine on one execution: `events[:lead]` (a Start or a Continue) always, then
    the rest (inbox items) while the execution is not running; stops after an item that
    leaves it running (async-latency), at the first rejection when `refuse`, and before
    event `stop_before`. Returns the step as data."""
    history: list[dict] = []
    effects: list = []
    results: list[dict] = []
    for index, event in enumerate(events):
        if stop_before is not None and index >= stop_before:
            break
        if index >= lead and snapshot is not None and snapshot.status == engine.RUNNING:
            break
        if status is not None:
            status.index = index
        result = engine.transition(machine, snapshot, event, env)
        snapshot = result.snapshot
        history.extend(result.history)
        effects.extend(result.effects)
        results.append({"rejected": result.rejected,
                        "available_actions": list(result.available_actions),
                        "history": len(result.history)})
        if refuse and result.rejected and index >= lead:
            break
        if index >= lead and snapshot.status == engine.RUNNING:
            break
    data = {"snapshot": snapshot.to_dict() if snapshot is not None else None,
            "history": history, "effects": [effect_data(e) for e in effects],
            "results": results}
    if machine.attributes and history and snapshot is not None:
        data["attributes"] = engine.attributes(machine, snapshot, env)
    share_contexts(data)
    return data


def share_contexts(step: dict) -> None:
    """Contexts sent once each, and their values once each: the engine shares them (an
    update makes a new dict whose other values are the old ones), JSON would copy them into
    every history entry — 900 steps of a context holding a list wrote 500 KB. Each entry's
    `context` (and the snapshot's) becomes an index into `contexts`, each a pair (keys,
    indexes into `values`); `unshare_contexts` rebuilds them, shared again."""
    values: list = []
    seen: dict[int, int] = {}
    contexts: list = []
    known: dict[int, int] = {}

    def value(item) -> int:
        index = seen.get(id(item))
        if index is None:
            index = seen[id(item)] = len(values)
            values.append(item)
        return index

    def context(ctx: dict) -> int:
        index = known.get(id(ctx))
        if index is None:
            index = known[id(ctx)] = len(contexts)
            contexts.append([list(ctx), [value(item) for item in ctx.values()]])
        return index

    for entry in step["history"]:
        if type(entry.get("context")) is dict:
            entry["context"] = context(entry["context"])
    snapshot = step["snapshot"]
    if snapshot is not None and type(snapshot.get("context")) is dict:
        snapshot["context"] = context(snapshot["context"])
    step["contexts"], step["values"] = contexts, values


def unshare_contexts(step: dict) -> None:
    """The contexts of a step made by `share_contexts`, as dicts again (in place)."""
    contexts_data = step.pop("contexts", None)
    if contexts_data is None:
        return
    values = step.pop("values")
    contexts = [dict(zip(keys, [values[index] for index in indexes], strict=True))
                for keys, indexes in contexts_data]
    for entry in step["history"]:
        if type(entry.get("context")) is int:
            entry["context"] = contexts[entry["context"]]
    snapshot = step["snapshot"]
    if snapshot is not None and type(snapshot.get("context")) is int:
        snapshot["context"] = contexts[snapshot["context"]]


class Child:
    """The child's state: its cached machines, its status page, its limits."""

    def __init__(self, page: mmap.mmap | None):
        self.status = Status(page)
        self.machines: OrderedDict[str, Any] = OrderedDict()
        self.io_ready = False

    # evaluation with the status written first
    def evaluate(self, time_limit: float, max_result_bytes: int):
        status = self.status

        def evaluate(expr: Expr, names: dict, limit: float | None = None) -> Any:
            status.begin(expr.path)
            try:
                return sandbox.evaluate(expr, names, time_limit=limit or time_limit,
                                        max_result_bytes=max_result_bytes)
            except MemoryError:
                raise ExpressionError("the expression ran out of memory", kind="resource",
                                      path=expr.path, exception="MemoryError") from None
            except RecursionError:
                raise ExpressionError("the expression nested too deeply", kind="resource",
                                      path=expr.path, exception="RecursionError") from None
        return evaluate

    def machine(self, request: dict):
        key = request["machine_key"]
        machine = self.machines.get(key)
        if machine is not None:
            self.machines.move_to_end(key)
            return machine
        document = request.get("machine")
        if document is None:
            return None
        machine = self.machines[key] = build(document)
        while len(self.machines) > MACHINE_CACHE:
            self.machines.popitem(last=False)
        return machine

    def compute(self, request: dict) -> dict:
        machine = self.machine(request)
        if machine is None:
            return {"miss": True}
        limits = request["limits"]
        facts = request["env"]
        env = engine.Env(
            now=facts["now"], seed=facts["seed"], execution=facts["execution"],
            step_limit=facts["step_limit"], max_steps=facts["max_steps"],
            evaluate=self.evaluate(limits["time_limit"], limits["max_result_bytes"]))
        snapshot = request["snapshot"]
        step = compute(
            machine, engine.Snapshot.from_dict(snapshot) if snapshot is not None else None,
            [event_from(event) for event in request["events"]], env,
            lead=request["lead"], refuse=request["refuse"], status=self.status,
            stop_before=request.get("stop_before"))
        return {"ok": True, "step": step}

    def call(self, request: dict) -> dict:
        """An invoke.call expression with io() bound (operations resolved here)."""
        registry, mocks = request["operations"], request["mocks"] or {}
        names = request["names"]
        failures: list[dict] = []
        evaluate = self.evaluate(request["time_limit"], request["max_result_bytes"])
        status = self.status
        expr = Expr(**request["expr"])

        def io(op, *args, **kwargs):
            if op in mocks:
                mock = mocks[op]
                mock_expr = (Expr(path=f"mocks.{op}", source=mock) if isinstance(mock, str)
                             else Expr(path=f"mocks.{op}", literal=mock))
                try:
                    return evaluate(mock_expr, {"args": list(args), "kwargs": kwargs, **names})
                finally:
                    status.begin(expr.path)
            status.begin(f"io:{op}")
            try:
                function = self.operation(registry, op)
                return function(*args, idempotency_key=request["token"], **kwargs)
            except Exception as exc:
                error = getattr(exc, "error", None)
                if isinstance(error, dict):  # IOFailure: the error branch sees its JSON
                    failures.append(error)
                raise
            finally:
                status.begin(expr.path)

        bound = {**names, "io": io, **engine.helpers(request["now"], request["seed"])}
        hook = request.get("deadline")
        try:
            with (self.resolve(hook)(request["time_limit"]) if hook
                  else contextlib.nullcontext()):
                output = evaluate(expr, bound)
        except ExpressionError as exc:  # fail(type, ...) wins over an io() failure caught
            raised = isinstance(exc, RaisedError) or not failures
            return {"ok": False, "error": exc.to_dict() if raised else failures[-1]}
        return {"ok": True, "output": output}

    def operation(self, registry: dict, name: str):
        if name not in registry:
            known = ", ".join(sorted(registry))
            error = {"type": "unknown_operation",
                     "message": f"no IO operation named {name!r} (known: {known})"}
            raise _IOError(error)
        return self.resolve(registry[name])

    def resolve(self, dotted: str):
        """A callable by dotted path (IO operations and their deadline: not pure code)."""
        if not self.io_ready and os.environ.get("DJANGO_SETTINGS_MODULE"):
            # Operations may read settings; setting Django up opens no database connection.
            importlib.import_module("django").setup()
            self.io_ready = True
        module, _, attribute = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


class _IOError(Exception):
    def __init__(self, error: dict):
        super().__init__(error["message"])
        self.error = error


def _encode_all_ints(encode, reply: dict) -> str:
    """JSON of the reply, with integers past CPython's 4,300-digit conversion limit written
    out too (the sandbox allows 100,000 bits): the values checks of the runtime refuse them
    with a clear error, where a failed encoding would only say the step was lost. The limit
    is lifted for this encoding only; the sandbox's own conversions keep it."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return encode(reply)
    finally:
        sys.set_int_max_str_digits(limit)


# The loop --------------------------------------------------------------------------------
def _requests(stdin):
    """The requests of the parent, until it closes the pipe."""
    while True:
        head = stdin.read(FRAME.size)
        if len(head) < FRAME.size:
            return
        (size,) = FRAME.unpack(head)
        data = stdin.read(size)
        if len(data) < size:
            return
        yield marshal.loads(data)


def _limit(memory_bytes: int) -> None:
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _CpuBackstop:
    """RLIMIT_CPU counts the process's whole life: allow each call about `seconds` more.
    The limit is moved only when it is too close or too far (one clock read per call)."""

    def __init__(self):
        self.soft = -1

    def allow(self, seconds: float) -> None:
        used = time.process_time()
        if self.soft < used + seconds or self.soft > used + seconds + 5:
            self.soft = int(used + seconds) + 2
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            soft = self.soft if hard == resource.RLIM_INFINITY else min(self.soft, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def main() -> None:
    memory = int(os.environ.get("DM_POOL_MEMORY_BYTES", "0"))
    fd = int(os.environ.get("DM_POOL_STATUS_FD", "-1"))
    page = mmap.mmap(fd, STATUS_SIZE) if fd >= 0 else None
    child = Child(page)
    _limit(memory)
    # Replies go to the original stdout; anything else printing (an IO operation's print())
    # goes to stderr instead of into the protocol.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode  # ASCII out
    cpu = _CpuBackstop()
    gc.freeze()  # what was imported stays unscanned by the collector
    for request in _requests(sys.stdin.buffer):
        cpu.allow(float(request.get("cpu_seconds", 60)))
        try:
            op = request["op"]
            reply = (child.call(request) if op == "call" else child.compute(request)
                     if op == "compute" else {"ok": True, "pid": os.getpid()})
            child.status.idle()  # encoding the reply is not an expression's time
            text = _encode_all_ints(encode, reply)
        except MemoryError:
            reply = None
            text = ""
        except Exception as exc:  # a bug, or values that are not JSON: this execution only
            reply = None
            text = encode({"ok": False, "kind": "result" if isinstance(exc, ValueError)
                           else "crashed", "index": child.status.index,
                           "message": f"{type(exc).__name__}: {exc}"[:2000]})
        if reply is None and not text:
            text = encode({"ok": False, "kind": "resource", "index": child.status.index,
                           "message": "the computation ran out of memory"})
        child.status.idle()
        stdout.write(text.encode("ascii") + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
