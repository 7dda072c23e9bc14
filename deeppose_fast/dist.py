"""Data-parallel helpers: Horovod when the process was started by ``horovodrun``, no-ops alone.

Horovod is imported lazily, only when the launcher's environment says this process is one of several
ranks, so a plain ``python`` run never needs it. Keras 3 needs the *backing* ``tf.Variable`` of each
Keras variable (``v.value``) for Horovod's tape and broadcast (see shared/STACK.md).

Elastic training (``run_elastic``, ``horovodrun --min-np/--max-np --host-discovery-script``): the state
is committed in memory (``KerasState``), and a rank that fails makes the survivors roll back to the last
commit, re-form the ring and call the training function again. Horovod 0.28.1's own Keras and TF states
predate Keras 3 (``optimizer.variables()`` is a list there; its TF state broadcasts in its constructor and
not on reset), hence ``KerasState`` here.
"""
from __future__ import annotations

import functools
import os
import signal
import socket
import time
from typing import Callable

_hvd = None  # the horovod.tensorflow module once initialised
_initialised = False
_peers: list[tuple[str, int]] = []  # (host name, pid) of every rank, by rank, once initialised

# Horovod's words when a collective finds the job broken (a peer died, or raised and shut down).
_SHUTDOWN_MARKERS = ("Horovod has been shut down", "Connection reset by peer", "Connection closed by peer")


class PeerLost(RuntimeError):
    """Another rank of the job died (killed, crashed, raised) while this rank was in a collective.

    Attributes:
        lost: the ranks known to be gone (those on this host whose process has ended); empty when the
            lost rank is on another host.
        unknown: the ranks on other hosts, whose state this rank cannot see.
        reporter: True on the one surviving rank that should tell the user (see ``report_rank``).
    """

    def __init__(self, lost: list[int], unknown: list[int], reporter: bool):
        self.lost, self.unknown, self.reporter = lost, unknown, reporter
        if lost:
            who = f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} " + \
                  ", ".join(f"(pid {_peers[r][1]} on {_peers[r][0]})" for r in lost)
        elif unknown:
            who = f"a rank on another host (ranks {', '.join(map(str, unknown))} are not on this one)"
        else:
            who = "a rank"
        super().__init__(f"{who} was lost")

# Set by horovodrun (Gloo and MPI launchers alike).
_LAUNCHER_VARS = ("HOROVOD_RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def launched_by_horovodrun() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


def init(pin_gpu: bool = True) -> None:
    """Initialise Horovod if launched by horovodrun; pin this process to the GPU of its local rank.
    Call before TensorFlow creates any tensor. Safe to call twice."""
    global _hvd, _initialised
    if _initialised:
        return
    _initialised = True
    if launched_by_horovodrun():
        import horovod.tensorflow as hvd

        hvd.init()
        _hvd = hvd
        # Not under elastic mode: a collective outside the elastic function deadlocks a rank that joins.
        if hvd.size() > 1 and not is_elastic():  # who is where, so that a lost rank can be named later
            _peers[:] = hvd.allgather_object((socket.gethostname(), os.getpid()), name="deeppose_fast_peers")
    if pin_gpu:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            # One process per GPU: each rank sees only its own, and grows memory as needed.
            gpu = gpus[local_rank() % len(gpus)]
            tf.config.set_visible_devices(gpu, "GPU")
            tf.config.experimental.set_memory_growth(gpu, True)


def is_elastic() -> bool:
    """Whether horovodrun started this process in elastic mode (``--host-discovery-script``)."""
    return os.environ.get("HOROVOD_ELASTIC") == "1"


def is_distributed() -> bool:
    return _hvd is not None and _hvd.size() > 1


def rank() -> int:
    return _hvd.rank() if _hvd is not None else 0


def size() -> int:
    return _hvd.size() if _hvd is not None else 1


def local_rank() -> int:
    return _hvd.local_rank() if _hvd is not None else 0


def is_root() -> bool:
    return rank() == 0


def backing(variables) -> list:
    """The ``tf.Variable`` behind each Keras 3 variable (plain tf.Variables pass through)."""
    return [getattr(v, "value", v) if not _is_tf_variable(v) else v for v in variables]


def _is_tf_variable(v) -> bool:
    import tensorflow as tf

    return isinstance(v, tf.Variable)


def gradient_tape(tape, fp16_compression: bool = False):
    """Wrap a ``tf.GradientTape`` so ``gradient()`` averages the gradients over ranks (identity alone).
    Pass ``dist.backing(model.trainable_variables)`` as the sources."""
    if _hvd is None:
        return tape
    compression = _hvd.Compression.fp16 if fp16_compression else _hvd.Compression.none
    return _hvd.DistributedGradientTape(tape, compression=compression)


def broadcast_variables(variables, root_rank: int = 0) -> None:
    """Overwrite ``variables`` (Keras or tf variables) on every rank with rank ``root_rank``'s values.
    A collective: every rank must call it, never under ``if rank == 0``."""
    if _hvd is None:
        return
    _hvd.broadcast_variables(backing(variables), root_rank=root_rank)


def allreduce(value, average: bool = True, name: str | None = None):
    """Average (or sum) a tensor or NumPy array over ranks; returns the same kind it was given.
    A collective: every rank must call it."""
    if _hvd is None:
        return value
    import numpy as np

    op = _hvd.Average if average else _hvd.Sum
    out = _hvd.allreduce(value, op=op, name=name)
    return out.numpy() if isinstance(value, (np.ndarray, np.generic, float, int)) else out


def average_variables(variables, prefix: str = "avg") -> None:
    """Replace each variable by its mean over ranks (e.g. batch-norm moving statistics, which every rank
    computes from its own data). A collective: every rank must call it with the same list."""
    if _hvd is None or _hvd.size() == 1:
        return
    for i, v in enumerate(backing(variables)):
        v.assign(_hvd.allreduce(v.read_value(), op=_hvd.Average, name=f"{prefix}_{i}"))


def broadcast_object(obj, root_rank: int = 0, name: str | None = None):
    """Rank ``root_rank``'s Python object on every rank (pickled). A collective."""
    if _hvd is None:
        return obj
    return _hvd.broadcast_object(obj, root_rank=root_rank, name=name)


def barrier() -> None:
    """Wait until every rank gets here (no-op alone)."""
    if _hvd is None:
        return
    import numpy as np

    _hvd.allreduce(np.zeros((1,), np.float32), name="deeppose_fast_barrier")


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` (raised by a collective) means another rank of the job is gone."""
    return _hvd is not None and any(m in str(error) for m in _SHUTDOWN_MARKERS)


def _alive(pid: int) -> bool:
    import psutil  # a Horovod dependency: present whenever ranks exist

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def peer_lost(wait_s: float = 2.0) -> PeerLost:
    """Describe a lost peer after ``is_peer_failure``: which ranks on this host have ended (waiting up to
    ``wait_s`` for a dying process to exit), and whether this rank is the one to report it.

    Ignores SIGTERM from here on (main thread only): horovodrun terminates the survivors right after a
    rank fails, and the report must be printed before this process goes; the caller exits next.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me, host = rank(), socket.gethostname()
    local = [r for r, (h, _) in enumerate(_peers) if h == host and r != me]
    unknown = [r for r, (h, _) in enumerate(_peers) if h != host]
    deadline = time.monotonic() + wait_s
    lost: list[int] = []
    while True:
        lost = [r for r in local if not _alive(_peers[r][1])]
        if lost or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return PeerLost(lost, unknown, reporter=report_rank(lost) == me)


def report_rank(lost: list[int]) -> int:
    """The rank that tells the user about a failure: the lowest rank not known to be lost (rank 0 unless
    rank 0 itself died on this host), so the message is printed once."""
    return min(r for r in range(max(size(), 1)) if r not in lost)


def exit_now(code: int) -> None:
    """Flush stdout/stderr and end the process at once with ``code``, skipping the interpreter's
    teardown. For the end of a rank under horovodrun: the launcher kills a rank 5 s after its SIGTERM,
    and tearing down TensorFlow and DALI took longer than that on a busy host (the clean stop then read
    as a failure). Call it only when everything the process writes is closed and synced."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@functools.cache
def _keras_state_class() -> type:
    """``KerasState``, made on first use: it subclasses Horovod's ``State``, imported only when elastic
    training runs (a plain process never needs Horovod)."""
    from horovod.common.elastic import State

    class KerasState(State):
        """Keras 3 / TF variables committed to host memory (``save``: a NumPy copy of each), restored
        from it after a failure (``restore``) and broadcast from rank 0 when the ring is (re-)formed
        (``sync``, which also commits, so a rank that joins holds a commit from its first step)."""

        def __init__(self, variables):
            self._variables = backing(variables)
            self._saved: list = []
            self.commits, self.commit_s = 0, 0.0  # how many commits, and their time in all
            super().__init__(bcast_object=lambda obj: broadcast_object(obj, name="elastic_host_updates"),
                             get_rank=rank)

        def save(self):
            self._saved = [v.numpy().copy() for v in self._variables]

        def restore(self):
            for v, value in zip(self._variables, self._saved):
                v.assign(value)

        def sync(self):
            _hvd.broadcast_variables(self._variables, root_rank=0)
            self.save()

        def commit(self):
            """Save the state in memory, then raise ``HostsUpdatedInterrupt`` if hosts changed (Horovod);
            the time it took is counted in ``commit_s``."""
            t0 = time.perf_counter()
            try:
                super().commit()
            finally:
                self.commits += 1
                self.commit_s += time.perf_counter() - t0

    return KerasState


def keras_state(variables):
    """An elastic state over ``variables`` (Keras 3 or tf variables): see ``_keras_state_class``."""
    return _keras_state_class()(variables)


def run_elastic(state, body: Callable):
    """Run ``body(state)`` under Horovod's elastic driver (``horovod.common.elastic.run_fn``, the machinery
    of ``hvd.elastic.run``): the state is synced from rank 0 first; when a collective fails because a
    rank is gone, the state is restored to its last commit, Horovod is re-initialised with the ranks left
    (and any that joined) and ``body`` runs again; a change of hosts announced at a commit does the same
    without the restore. Returns what ``body`` returns.

    Errors are classified here rather than by ``hvd.elastic.run``, whose wrapper recognises only an
    ``UnknownError`` from an op named ``Horovod*`` and silently returns None for any other."""
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError

    def guarded(state):
        try:
            return body(state)
        except HorovodInternalError:
            raise
        except Exception as e:
            if is_peer_failure(e) or _is_collective_error(e):
                raise HorovodInternalError(e) from e
            raise

    def reset():
        _hvd.shutdown()
        _hvd.init()

    return run_fn(guarded, reset)(state)


def _is_collective_error(error: BaseException) -> bool:
    """A TensorFlow error raised by one of Horovod's ops (its message names the op)."""
    import tensorflow as tf  # only reached under Horovod, where TensorFlow is loaded

    return isinstance(error, tf.errors.OpError) and "Horovod" in str(error)


def shutdown() -> None:
    """End Horovod (also after a lost peer: it returns at once)."""
    global _hvd, _initialised
    if _hvd is not None:
        _hvd.shutdown()
    _hvd, _initialised = None, False
    _peers.clear()
