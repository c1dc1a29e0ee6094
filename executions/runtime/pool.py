"""The evaluation pool: user-written code runs in bounded child processes, never here.

Each web or worker process owns two small pools of pre-started children, started lazily:

- `compute`: one whole engine computation for one execution per round trip (the lead event
  and the inbox items' events; the machine is cached in the child by content key, the
  document sent only on a miss), `executions/runtime/pool_child.py`;
- `io`: one `invoke.call` expression with its `io()` calls, bounded by the call's own
  `timeout_seconds` (wall clock).

A child is a plain `python -m executions.runtime.pool_child` reading requests (marshal) on
its stdin and answering JSON lines on its stdout, the only thing read of a child's
(exec'd, not forked: it inherits no database connection, no lock, no
thread of this process; file descriptors are closed except its status page). It limits its
own address space (RLIMIT_AS) and, per call, its CPU time (RLIMIT_CPU, a backstop). This
process kills it (SIGKILL) and starts another when an expression has run past the time
limit plus a margin, or the whole call past its budget; a crash, a kill or an out-of-memory
comes back as `Failure` with `kind` `timeout`, `resource` or `crashed` and the path of the
expression it was in (read from the shared status page), for that execution only.

The pools are per process and per fork: a process forked after using a pool (a django-q2
worker, a preloaded gunicorn worker) starts its own, never talking to its parent's children.
"""
from __future__ import annotations

import json
import logging
import marshal
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from executions.runtime import pool_child
from executions.runtime.pool_child import STATUS_SIZE, read_status

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
MARGIN = 0.5  # seconds past a time limit before the child is killed
MAX_REPLY_BYTES = 64 * 2**20  # a reply larger than this is refused (resource)
START_TIMEOUT = 30.0  # a child that does not answer its first ping in time is a failure

DEFAULTS = {
    "POOL_SIZE": 2,  # compute children per process
    "IO_POOL_SIZE": 4,  # call children per process
    "POOL_MEMORY_MB": 512,  # RLIMIT_AS of a child
    "POOL_CALL_TIME_LIMIT": 30.0,  # one whole computation (all its expressions), seconds
}


def _frame(message: dict) -> bytes:
    """A request as the child reads it: marshal (the child trusts its parent; replies, which
    the parent does not trust, are JSON), after its length (pool_child.FRAME)."""
    data = marshal.dumps(message)
    return pool_child.FRAME.pack(len(data)) + data


def _parse_int(digits: str) -> int:
    """Integers in a reply. One longer than CPython converts (4,300 digits) is far past any
    number a value may hold (expressions.values refuses it as too large): it stands as a
    number of the same sign and at least that size, made without converting the text."""
    if len(digits) <= 4300:
        return int(digits)
    sign = -1 if digits.startswith("-") else 1
    return sign * 10 ** min(len(digits.lstrip("-")), 100_000)


_decode_long_ints = json.JSONDecoder(parse_int=_parse_int).decode


def _decode(text: str):
    """A reply: json's own integers (a hook on each integer cost more than the rest of the
    decoding), and only when one is past CPython's conversion limit (ValueError), again
    with `_parse_int`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return _decode_long_ints(text)


def config(name: str) -> Any:
    return settings.DATA_MACHINES.get(name, DEFAULTS.get(name))


@dataclass
class Failure(Exception):
    """The child could not finish: `kind` timeout | resource | crashed | result."""

    kind: str
    message: str
    path: str | None = None
    index: int = 0

    def __str__(self) -> str:
        return self.message


class _Dead(Exception):
    """The child exited (or was killed by us)."""


class Worker:
    """One child process and its status page."""

    def __init__(self, memory_bytes: int, *, confirm: bool = True):
        self.memory_bytes = memory_bytes
        self.status_fd = os.memfd_create("dm-pool-status", os.MFD_CLOEXEC)
        os.ftruncate(self.status_fd, STATUS_SIZE)
        self.page = mmap.mmap(self.status_fd, STATUS_SIZE)
        env = {**os.environ, "DM_POOL_MEMORY_BYTES": str(memory_bytes),
               "DM_POOL_STATUS_FD": str(self.status_fd),
               "PYTHONPATH": os.pathsep.join(
                   [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "executions.runtime.pool_child"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self.status_fd,),
            bufsize=0)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.out_fd = self.stdout.fileno()
        self.buffer = bytearray()
        self.machines: set[str] = set()  # machine keys this child was sent
        self.killed_by_us = False
        self.calls = 0
        self.confirmed = False
        if confirm:
            self.confirm()

    def confirm(self) -> None:
        """Wait for the child's answer to a first ping: it has started and set its limits
        (it sets them before it reads any request)."""
        try:  # a child that cannot start is the deployment's problem, not an execution's
            self.request({"op": "ping"}, total=START_TIMEOUT, per_expression=None)
        except (_Dead, Failure):
            code = self.process.poll()
            self.close()
            raise RuntimeError(f"the evaluation pool could not start a child (exit status "
                               f"{code}); its error output is in this process's log") from None
        self.confirmed = True

    def request(self, message: dict, *, total: float, per_expression: float | None) -> dict:
        """Send one request and wait for its reply; the watchdog kills the child past its
        bounds (the blocking read then ends)."""
        data = _frame(message)
        self.calls += 1
        self.page[:pool_child.STATUS_HEADER] = bytes(pool_child.STATUS_HEADER)  # idle, event 0
        watchdog.watch(self, time.monotonic() + total, per_expression)
        try:
            try:
                self.stdin.write(data)
            except (BrokenPipeError, OSError):
                raise _Dead() from None
            return self._reply()
        finally:
            watchdog.done(self)

    def _reply(self) -> dict:
        """Blocking reads until a whole line: a read with poll() and a timeout cost about
        55 µs more per round trip than a plain blocking read on the development machine."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[:end + 1]
                try:
                    reply = _decode(line.decode())
                except (ValueError, RecursionError):  # nested past the parser's limit
                    reply = None
                if not isinstance(reply, dict):
                    self.kill()
                    raise Failure("crashed", "its process sent an unreadable reply")
                return reply
            chunk = os.read(self.out_fd, 1 << 20)
            if not chunk:
                raise _Dead()
            buffer += chunk
            if len(buffer) > MAX_REPLY_BYTES:
                self.kill()
                raise Failure("resource", "the step's result is larger than "
                              f"{MAX_REPLY_BYTES // 2**20} MiB")

    def overdue(self, now: float, deadline: float, per_expression: float | None) -> bool:
        if now >= deadline:
            return True
        if per_expression is None:
            return False
        started, _, _ = read_status(self.page)
        return bool(started) and now - started > per_expression

    def where(self) -> tuple[int, str | None]:
        _, index, path = read_status(self.page)
        return index, path or None

    def kill(self) -> None:
        self.killed_by_us = True
        if self.process.poll() is None:
            self.process.kill()

    def abandon(self) -> None:
        """In a forked process: close this process's copies of the child's pipes and page
        (the child belongs to the parent process)."""
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.page.close()
        os.close(self.status_fd)

    def close(self) -> None:
        self.kill()
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill always ends it
            log.warning("pool child %s did not exit", self.process.pid)
        self.page.close()
        os.close(self.status_fd)

    def death(self) -> tuple[str, str]:
        """(kind, message) of why the child is gone."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.process.kill()
            code = self.process.wait()
        if self.killed_by_us or code == -signal.SIGXCPU:
            return "timeout", "it ran past its time limit and its process was stopped"
        if code == -signal.SIGKILL:
            return "resource", "its process was killed (out of memory?)"
        if code < 0:
            name = signal.Signals(-code).name
            return "crashed", f"its process crashed ({name})"
        return "crashed", f"its process exited with status {code}"


class _Watchdog:
    """One thread per process that kills children past their bounds: the wall-clock budget
    of the call, or the expression they are in (read from their status page). It sleeps
    while no call is in flight."""

    TICK = 0.05

    def __init__(self):
        self.busy: dict[Worker, tuple[float, float | None]] = {}
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None
        self.idle = False  # waiting for a call, not ticking: only then is it woken

    def watch(self, worker: Worker, deadline: float, per_expression: float | None) -> None:
        # No lock on the way of every call: a dict item is set atomically, and the thread
        # marks itself idle BEFORE it looks at `busy` for the last time, so a call it did
        # not see finds it idle and wakes it.
        self.busy[worker] = (deadline, per_expression)
        if self.idle or self.thread is None:
            with self.changed:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(target=self._run, name="pool-watchdog",
                                                   daemon=True)
                    self.thread.start()
                self.changed.notify()

    def done(self, worker: Worker) -> None:
        self.busy.pop(worker, None)

    def _run(self) -> None:
        while True:
            with self.changed:
                self.idle = True
                while not self.busy:
                    self.changed.wait()
                self.idle = False
                self.changed.wait(self.TICK)
            watched = list(self.busy.items())
            now = time.monotonic()
            for worker, (deadline, per_expression) in watched:
                try:
                    if worker.overdue(now, deadline, per_expression):
                        worker.kill()
                except (ValueError, OSError):  # closed meanwhile
                    pass


watchdog = _Watchdog()


class Pool:
    """At most `size` children, started on first use and replaced when one dies."""

    def __init__(self, size: int, memory_bytes: int):
        self.size = max(1, size)
        self.memory_bytes = memory_bytes
        self.idle: list[Worker] = []
        self.workers: set[Worker] = set()  # every live child, idle or busy
        self.count = 0
        self.ready = threading.Condition()
        self.started = 0  # children started over the pool's life (tests, logs)

    def acquire(self) -> Worker:
        with self.ready:
            while not self.idle and self.count >= self.size:
                self.ready.wait()
            worker = self.idle.pop() if self.idle else None
            if worker is None:
                self.count += 1
        if worker is not None:
            if not worker.confirmed:  # started ahead by prestart()
                self._confirm(worker)
            return worker
        try:
            worker = Worker(self.memory_bytes)
        except BaseException:
            self._lost()
            raise
        self.started += 1
        self.workers.add(worker)
        return worker

    def prestart(self) -> None:
        """Start one child now without waiting for it, when none is idle and there is room:
        a process about to compute (a command) overlaps the child's start (its imports, tens
        of ms) with its own set-up. The first `acquire` waits for the child's first answer,
        as for any child; one that cannot start fails there."""
        with self.ready:
            if self.idle or self.count >= self.size:
                return
            self.count += 1
        try:
            worker = Worker(self.memory_bytes, confirm=False)
        except BaseException:
            self._lost()
            raise
        self.started += 1
        self.workers.add(worker)
        with self.ready:
            self.idle.append(worker)
            self.ready.notify()

    def _confirm(self, worker: Worker) -> None:
        try:
            worker.confirm()  # closes the child when it fails
        except BaseException:
            self.workers.discard(worker)
            self._lost()
            raise

    def _lost(self) -> None:
        """A child that was counted will not serve: make room for another."""
        with self.ready:
            self.count -= 1
            self.ready.notify()

    def release(self, worker: Worker, *, broken: bool = False) -> None:
        if broken:
            self.workers.discard(worker)
            worker.close()
        with self.ready:
            if broken:
                self.count -= 1
            else:
                self.idle.append(worker)
            self.ready.notify()

    def run(self, message: dict, *, total: float, per_expression: float | None = None,
            machine: tuple[str, Any] | None = None) -> dict:
        """One request on one child: the reply, or Failure when the child died."""
        worker = self.acquire()
        try:
            if machine is not None:
                key, document = machine
                message["machine_key"] = key
                if key not in worker.machines:
                    message["machine"] = document()
            reply = worker.request(message, total=total, per_expression=per_expression)
            if reply.get("miss"):  # the child dropped it from its cache: send it again
                assert machine is not None
                message["machine"] = machine[1]()
                reply = worker.request(message, total=total, per_expression=per_expression)
            if machine is not None:
                if len(worker.machines) >= pool_child.MACHINE_CACHE:
                    worker.machines.clear()  # the child evicts too; a miss resends
                worker.machines.add(machine[0])
        except _Dead:
            index, path = worker.where()
            kind, why = worker.death()
            self.release(worker, broken=True)
            raise Failure(kind, why, path, index) from None
        except BaseException:
            self.release(worker, broken=True)
            raise
        broken = worker.killed_by_us or (  # after a MemoryError: a fresh child
            not reply.get("ok", True) and reply.get("kind") in ("resource", "crashed"))
        self.release(worker, broken=broken)
        return reply

    def close(self) -> None:
        with self.ready:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for worker in idle:
            self.workers.discard(worker)
            worker.close()


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def get(kind: str) -> Pool:
    """This process's pool of `kind` (compute | io)."""
    pool = _pools.get(kind)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(kind)
            if pool is None:
                size = config("POOL_SIZE" if kind == "compute" else "IO_POOL_SIZE")
                pool = _pools[kind] = Pool(int(size), int(config("POOL_MEMORY_MB")) * 2**20)
    return pool


def prestart(kind: str = "compute") -> None:
    """Start a child of this process's `kind` pool now (Pool.prestart)."""
    get(kind).prestart()


def shutdown() -> None:
    """Stop this process's children (tests; they also exit when this process does)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _forget_after_fork() -> None:
    """A forked process must not talk to its parent's children: it starts its own."""
    global _pools_lock, watchdog
    watchdog = _Watchdog()  # its thread did not survive the fork
    for pool in _pools.values():
        for worker in list(pool.workers):
            try:
                worker.abandon()
            except OSError:
                pass
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


# The two kinds of request -----------------------------------------------------------------
def compute(*, machine_key: str, document, snapshot: dict | None, events: list[dict],
            lead: int, refuse: bool, env: dict, time_limit: float, max_result_bytes: int,
            stop_before: int | None = None) -> dict:
    """One engine computation in a child (pool_child.compute); the step as data. Raises
    Failure when the child was killed, crashed or ran out of memory, or when what it
    computed cannot be sent back."""
    total = float(config("POOL_CALL_TIME_LIMIT"))
    message = {"op": "compute", "snapshot": snapshot, "events": events, "lead": lead,
               "refuse": refuse, "env": env, "stop_before": stop_before,
               "limits": {"time_limit": time_limit, "max_result_bytes": max_result_bytes},
               "cpu_seconds": total + MARGIN}
    reply = get("compute").run(message, total=total + MARGIN,
                               per_expression=time_limit + MARGIN,
                               machine=(machine_key, document))
    if not reply.get("ok"):
        raise Failure(reply.get("kind", "crashed"), reply.get("message", ""),
                      reply.get("path"), reply.get("index", 0))
    step = reply["step"]
    try:
        pool_child.unshare_contexts(step)
    except (LookupError, TypeError, ValueError) as exc:
        raise Failure("crashed", f"its process sent an unreadable step ({exc})") from None
    return step


def call(*, expr: dict, names: dict, mocks: dict, token: str, now: float, seed: int,
         timeout: float, max_result_bytes: int, deadline: str | None = None) -> dict:
    """An invoke.call expression with io() in a child, killed after `timeout` seconds of
    wall clock: {"ok": True, "output"} or {"ok": False, "error"}; Failure when killed.
    `deadline`: the dotted path of a context manager the child runs the expression in,
    given `timeout` (io.deadline: every operation inside ends by then)."""
    message = {"op": "call", "expr": expr, "names": names, "mocks": mocks, "token": token,
               "now": now, "seed": seed, "time_limit": timeout, "deadline": deadline,
               "max_result_bytes": max_result_bytes,
               "operations": dict(settings.DATA_MACHINES["IO_OPERATIONS"]),
               "cpu_seconds": timeout + MARGIN}
    return get("io").run(message, total=timeout + MARGIN)
