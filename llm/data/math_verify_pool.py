"""A pool of math-verify worker processes with a hard per-item timeout.

math-verify times out with signal.alarm, which fails outside the main thread and cannot stop
C code (a huge integer power), so `MathVerifyPool` runs it in worker subprocesses that import
only math-verify, each item with a hard wall-clock timeout; a worker that runs past it or
dies is killed and replaced and the item scores as wrong. The pool is started on first use,
reused, thread-safe, and closed at exit (`default_math_pool`).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

_WORKER_SOURCE = r"""
import json, os, sys
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
def main():
    try:
        mem_mb = int(sys.argv[1])
        if mem_mb > 0:
            import resource
            limit = mem_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import logging
        logging.disable(logging.CRITICAL)
        from math_verify import parse, verify
        # warm up (lazy imports, the LaTeX grammar) so a first item is not charged for it
        half = parse("$\\boxed{\\frac{1}{2}}$", parsing_timeout=0)
        verify(half, parse("$0.5$", parsing_timeout=0), timeout_seconds=0)
    except BaseException as err:
        print(json.dumps({"ready": False, "error": repr(err)}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t = req["timeout"]
        try:
            gold = parse(req["gold"], parsing_timeout=t)
            pred = parse(req["pred"], parsing_timeout=t)
            ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=t))
        except BaseException:
            ok = False
        print(json.dumps({"ok": ok}), flush=True)
main()
"""


class _Worker:
    def __init__(self, memory_limit_mb: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE, str(memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.item: int | None = None  # index of the item being verified
        self.deadline = 0.0

    def send(self, message: dict) -> None:
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def read_message(self) -> dict | None:
        """One JSON message if a full line arrived; raises EOFError if the worker is gone."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class MathVerifyPool:
    """Worker subprocesses running math-verify with a hard per-item wall-clock timeout.

    `verify(golds, preds) -> list[bool]`: golds and preds are texts math-verify parses (e.g.
    "\\boxed{\\frac{1}{2}}"). Each item gets `timeout` seconds from the moment a worker takes
    it; past that, or if the worker dies, the worker is killed and replaced and the item is
    False (counted in `num_timeouts` / `num_crashes`). math-verify's own alarms
    (`signal_timeout` seconds, default half the timeout; 0 switches them off) end most slow
    items without a kill. Workers start on first use (about a second: importing math-verify
    and sympy, then a warm-up item so that the first real item is not charged for the lazy
    start-up) and are reused. Each worker's address space is capped at `memory_limit_mb`
    (0: no cap). POSIX only.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        timeout: float = 5.0,
        start_timeout: float = 60.0,
        memory_limit_mb: int = 4096,
        signal_timeout: int | None = None,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.memory_limit_mb = int(memory_limit_mb)
        if signal_timeout is None:
            signal_timeout = max(1, int(self.timeout / 2))
        self.signal_timeout = int(signal_timeout)
        self.num_timeouts = 0
        self.num_crashes = 0
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def _spawn(self) -> _Worker:
        worker = _Worker(self.memory_limit_mb)
        worker.deadline = time.monotonic() + self.start_timeout
        return worker

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()

    def verify(self, golds: Sequence[str], preds: Sequence[str]) -> list[bool]:
        if len(golds) != len(preds):
            raise ValueError(
                f"golds and preds must have the same length, got {len(golds)}, {len(preds)}"
            )
        with self._lock:
            return self._verify(list(golds), list(preds))

    def _verify(self, golds: list[str], preds: list[str]) -> list[bool]:
        if not golds:
            return []
        signal_timeout = self.signal_timeout
        unique = list(dict.fromkeys(zip(golds, preds, strict=True)))  # G samples repeat answers
        results: dict[int, bool] = {}
        todo = list(range(len(unique)))[::-1]
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())
        while len(results) < len(unique):
            for worker in list(self._workers):
                if not (worker.ready and worker.item is None and todo):
                    continue
                if worker.proc.poll() is not None:  # died while idle: replace, keep the item
                    self.num_crashes += 1
                    self._replace(worker)
                    continue
                item = todo.pop()
                gold, pred = unique[item]
                try:
                    worker.send({"gold": gold, "pred": pred, "timeout": signal_timeout})
                except OSError:
                    todo.append(item)
                    self.num_crashes += 1
                    self._replace(worker)
                    continue
                worker.item, worker.deadline = item, time.monotonic() + self.timeout
            waiting = [w for w in self._workers if not w.ready or w.item is not None]
            wait_s = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            readable, _, _ = select.select([w.fd for w in waiting], [], [], wait_s)
            for worker in [w for w in waiting if w.fd in readable]:
                try:
                    message = worker.read_message()
                except (EOFError, OSError, ValueError):
                    self._fail(worker, results, crashed=True)
                    continue
                if message is None:
                    continue
                if not worker.ready:
                    if not message.get("ready"):
                        self.close()
                        raise RuntimeError(f"math-verify worker failed: {message.get('error')}")
                    worker.ready = True
                else:
                    results[worker.item] = bool(message.get("ok"))
                    worker.item = None
            now = time.monotonic()
            expired = [w for w in waiting if w in self._workers and now > w.deadline]
            for worker in [w for w in expired if not w.ready or w.item is not None]:
                if not worker.ready:
                    self.close()
                    raise RuntimeError(f"math-verify worker not ready after {self.start_timeout}s")
                self._fail(worker, results, crashed=False)
        by_pair = {pair: results[i] for i, pair in enumerate(unique)}
        return [by_pair[pair] for pair in zip(golds, preds, strict=True)]

    def _fail(self, worker: _Worker, results: dict[int, bool], *, crashed: bool) -> None:
        if not worker.ready:
            self.close()
            raise RuntimeError("math-verify worker exited during start-up")
        results[worker.item] = False
        if crashed:
            self.num_crashes += 1
        else:
            self.num_timeouts += 1
        self._replace(worker)

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stop the workers; the next `verify` starts fresh ones."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill()

    def __enter__(self) -> MathVerifyPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default_pool: MathVerifyPool | None = None


def default_math_pool() -> MathVerifyPool:
    """The process-wide pool `math_reward` uses when given none (created on first use)."""
    global _default_pool
    if _default_pool is None:
        _default_pool = MathVerifyPool()
        atexit.register(_default_pool.close)
    return _default_pool
