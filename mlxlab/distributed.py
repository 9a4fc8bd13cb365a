"""More than one process: MLX's own distributed engine (`mx.distributed`, started by `mlx.launch`).

mlxlab writes no transport of its own. Under `mlx.launch` (ring over Ethernet or Thunderbolt, JACCL over
Thunderbolt 5 RDMA, MPI, NCCL on CUDA) every process calls the same functions; this module gives them the
group (`world`) and the few collective helpers the stages need:

- `from_main(fn)`: rank 0 runs `fn` (reads files, checks a checkpoint) and every rank gets its JSON result, or
  an MlxlabError: no shared filesystem is assumed, and any error on rank 0 reaches every rank.
- `broadcast_arrays`: rank 0's arrays (adapters, optimizer state) to every rank.
- `gather_json`: every rank's JSON-able result, in rank order, on every rank.
- `guard`: a lost peer (a rank that crashed or was killed) becomes a clear MlxlabError, not a hang or a
  traceback; `mlx.launch` then stops the remaining ranks.

With one process (no launcher) `world()` is a group of size 1 and every helper is a no-op.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from mlxlab.errors import MlxlabError


@dataclass(frozen=True)
class World:
    """This process's place in the distributed group."""
    rank: int
    size: int
    backend: str          # ring | jaccl | mpi | nccl | single
    group: Any = None     # the mx.distributed.Group (None for a single process)

    @property
    def main(self) -> bool:
        """Rank 0: the one rank that writes outputs."""
        return self.rank == 0

    def describe(self) -> str:
        """'rank 1 of 2 (ring)', or 'single process'."""
        return f"rank {self.rank} of {self.size} ({self.backend})" if self.size > 1 else "single process"


def launched_backend() -> str | None:
    """The backend `mlx.launch` (or mpirun) set this process up for, from its environment; None when not launched."""
    env = os.environ
    if env.get("MLX_JACCL_COORDINATOR") or env.get("MLX_IBV_DEVICES"):
        return "jaccl"
    if env.get("MLX_HOSTFILE") and env.get("MLX_RANK") is not None:
        return "ring"
    if env.get("OMPI_COMM_WORLD_SIZE") or env.get("PMI_SIZE"):
        return "mpi"
    if env.get("MLX_WORLD_SIZE") and env.get("MLX_RANK") is not None:
        return "nccl"
    return None


def local_ranks() -> int:
    """How many ranks of this group run on this machine (from mlx.launch's ring hostfile; 1 when unknown)."""
    path, rank = os.environ.get("MLX_HOSTFILE"), os.environ.get("MLX_RANK")
    if not path or rank is None:
        return 1
    try:
        hosts = json.loads(open(path, encoding="utf-8").read())
        mine = hosts[int(rank)][0].rsplit(":", 1)[0]
        return max(1, sum(1 for h in hosts if h and h[0].rsplit(":", 1)[0] == mine))
    except (OSError, ValueError, IndexError, TypeError, AttributeError):
        return 1


@functools.lru_cache(maxsize=1)
def world() -> World:
    """The global group: `mx.distributed.init()` under a launcher, else a single process (no import of MLX)."""
    backend = launched_backend()
    if backend is None:
        return World(0, 1, "single")
    import mlx.core as mx

    try:
        group = mx.distributed.init(strict=True, backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise MlxlabError(f"could not join the distributed group ({backend}): {exc}",
                          hint="start every rank with the same `mlx.launch` command; check the hosts, ports and "
                               "firewall (`mlx.launch --verbose` shows the connections)") from None
    return World(group.rank(), group.size(), backend, group)


def comm_stream():
    """The stream collectives run on: the CPU on Metal (GPU-stream collectives time out on long steps), else the
    default (NCCL needs the GPU stream)."""
    import mlx.core as mx

    return mx.cpu if mx.metal.is_available() else None


@contextlib.contextmanager
def guard(what: str, w: World | None = None):
    """Turn a lost peer inside the block into an MlxlabError that says which rank saw it and where to look."""
    w = w or world()
    try:
        yield
    except RuntimeError as exc:
        if w.size == 1 or not _lost_peer(exc):
            raise
        raise MlxlabError(f"{w.describe()}: lost the connection to another rank while {what} ({exc})",
                          hint="another rank stopped: its own error is in the output above; fix it and rerun the "
                               "same command (finished work resumes)") from None


def _lost_peer(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("[ring]", "[jaccl]", "[mpi]", "[nccl]", "peer", "connection", "socket"))


def _all_sum(x, w: World):
    import mlx.core as mx

    out = mx.distributed.all_sum(x, group=w.group, stream=comm_stream())
    mx.eval(out)
    return out


def _broadcast_bytes(data: bytes | None, w: World) -> bytes:
    """Rank 0's `data` on every rank (a sum where the other ranks add zeros: the engines have no broadcast)."""
    import mlx.core as mx
    import numpy as np

    size = _all_sum(mx.array([len(data) if w.main else 0], dtype=mx.int64), w).item()
    mine = np.frombuffer(data, np.uint8) if w.main else np.zeros(size, np.uint8)
    # uint8 sums of one non-zero term cannot overflow; int32 keeps every backend's sum kernels happy
    total = _all_sum(mx.array(mine.astype(np.int32)), w)
    return np.asarray(total).astype(np.uint8).tobytes()


def from_main(fn: Callable[[], Any], what: str, w: World | None = None) -> Any:
    """`fn()` on rank 0 only; its JSON-able result on every rank, as JSON gives it back (tuples are lists, keys
    strings, Paths strings) on one process too, so a caller sees the same types however many ranks run.

    When `fn` raises, rank 0 re-raises its own exception and every other rank raises an MlxlabError that says
    so (the same message, file and hint for an MlxlabError): no rank is left waiting for an answer.
    """
    w = w or world()
    if w.size == 1:
        return json.loads(json.dumps(fn(), default=str))
    reply: dict = {}
    if w.main:
        try:
            reply = {"value": fn()}
        except BaseException as exc:       # any failure, Ctrl-C included: the others wait in the broadcast below
            if isinstance(exc, MlxlabError):
                reply = {"error": exc.message, "path": str(exc.path) if exc.path else None, "line": exc.line,
                         "column": exc.column, "hint": exc.hint}
            else:
                reply = {"error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                         "hint": "an error that rank 0 did not expect: its traceback is in rank 0's output"}
            with guard(what, w):
                _broadcast_bytes(json.dumps(reply).encode(), w)
            raise
    with guard(what, w):
        reply = json.loads(_broadcast_bytes(json.dumps(reply, default=str).encode() if w.main else None, w))
    if "error" in reply:
        raise MlxlabError(f"rank 0 stopped while {what}: {reply['error']}", path=reply.get("path"),
                          line=reply.get("line"), column=reply.get("column"), hint=reply.get("hint"))
    return reply["value"]


def gather_json(value: Any, what: str, w: World | None = None) -> list:
    """Every rank's JSON-able `value`, in rank order, on every rank."""
    import mlx.core as mx
    import numpy as np

    w = w or world()
    if w.size == 1:
        return [value]
    data = np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), np.uint8)
    with guard(what, w):
        sizes = _all_sum(mx.array([len(data) if r == w.rank else 0 for r in range(w.size)], dtype=mx.int64), w)
        sizes = [int(s) for s in sizes.tolist()]
        padded = np.zeros(max(sizes), np.int32)
        padded[:len(data)] = data
        rows = np.asarray(mx.distributed.all_gather(mx.array(padded)[None], group=w.group, stream=comm_stream()))
    return [json.loads(rows[r, :sizes[r]].astype(np.uint8).tobytes()) for r in range(w.size)]


def broadcast_arrays(arrays: dict, what: str, w: World | None = None) -> dict:
    """Rank 0's arrays (same names and shapes on every rank) on every rank."""
    import mlx.core as mx

    w = w or world()
    if w.size == 1:
        return arrays
    with guard(what, w):
        out = {k: mx.distributed.all_sum(v if w.main else mx.zeros_like(v), group=w.group, stream=comm_stream())
               for k, v in arrays.items()}
        mx.eval(out)
    return out


def check_batch(batch_size: int, w: World | None = None) -> None:
    """A global batch must split evenly over the ranks."""
    w = w or world()
    if batch_size % w.size:
        lower, upper = batch_size // w.size * w.size, -(-batch_size // w.size) * w.size
        raise MlxlabError(f"batch_size {batch_size} does not split over {w.size} ranks: the global batch must be a "
                          f"multiple of the number of processes",
                          hint=f"use --batch-size {upper}" + (f" or {lower}" if lower else ""))


def shares(costs: list[float], size: int) -> list[int]:
    """The rank each item goes to: longest first onto the least-loaded rank (ties: lower rank), deterministic."""
    load = [0.0] * size
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += costs[i]
    return owner


def free_ports(count: int = 2) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (for `mlx.launch --starting-port`: the ring
    backend listens on port + rank)."""
    import socket

    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def info() -> dict:
    """{"rank", "size", "backend"} of this process (for `mlxlab info`)."""
    w = world()
    return {"rank": w.rank, "size": w.size, "backend": w.backend}
