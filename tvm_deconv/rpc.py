"""Boards behind a TVM RPC tracker: sessions, MetaSchedule runner and builder, health checks.

A :class:`Board` is a key on a tracker (``python -m tvm.exec.rpc_server --tracker HOST:PORT
--key KEY`` on the board; ``scripts/arm_board.sh start`` for the emulated one).  Unlike TVM's
``TrackerSession.request``, which queues forever for a key nobody serves, every session here
first checks that a server with the key is registered and bounds the wait, so a board that
dropped out fails its trials at once (:class:`BoardLost`) instead of hanging the tuning run.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from tvm import rpc
from tvm.ir.utils import derived_object
from tvm.rpc import base
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor

from .tuning import PooledBuilder

logger = logging.getLogger("tvm_deconv")


class BoardLost(RuntimeError):
    """The board stopped serving (its server is gone or the tracker is unreachable).

    ``results``: the :class:`~tvm_deconv.tuning.TaskResult` rows finished before, when raised
    by :func:`~tvm_deconv.tuning.tune`; every record measured so far stays in the database."""

    def __init__(self, message: str, results: Optional[list] = None):
        super().__init__(message)
        self.results = list(results or [])


@dataclass(frozen=True)
class Board:
    """A board registered as ``key`` to the RPC tracker at ``host:port``.

    ``timeout``: seconds an RPC session may last and a request may wait for the board (slow
    boards and emulation need more than TVM's defaults); ``cross_cc``: the compiler linking
    shared libraries for it (None: this machine's); ``grace``: seconds a board that dropped
    out may take to re-register (a restarted tracker) before it counts as lost."""

    host: str
    port: int
    key: str
    timeout: float = 120.0
    cross_cc: Optional[str] = None
    grace: float = 20.0

    @classmethod
    def parse(cls, tracker: str, key: str, **kwargs) -> "Board":
        """From ``HOST:PORT`` (``--rpc-tracker``) and a key."""
        host, sep, port = tracker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--rpc-tracker {tracker!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
        return cls(host, int(port), key, **kwargs)

    def __str__(self) -> str:
        return f"board {self.key!r} at tracker {self.host}:{self.port}"

    # -- tracker protocol -------------------------------------------------------------------

    def _ask_tracker(self, message: list, timeout: float):
        """One request/answer with the tracker on a fresh connection (``OSError`` on failure)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise OSError(f"{self.host}:{self.port} is not a TVM RPC tracker")
            base.sendjson(sock, message)
            value = base.recvjson(sock)
        if not isinstance(value, list) or value[0] != base.TrackerCode.SUCCESS:
            raise OSError(f"unexpected tracker answer {value!r}")
        return value[1]

    def problem(self) -> Optional[str]:
        """None when a server with this key is registered to the tracker, else what is wrong."""
        try:
            summary = self._ask_tracker([base.TrackerCode.SUMMARY], timeout=10)
        except OSError as err:
            return f"tracker unreachable ({err})"
        keys = [info.get("key") for info in summary.get("server_info", [])]
        if f"server:{self.key}" not in keys:
            return "no server with this key is registered to the tracker"
        return None

    def wait_until_up(self, seconds: Optional[float] = None) -> Optional[str]:
        """Poll :meth:`problem` for up to ``seconds`` (default ``grace``); the last problem."""
        deadline = time.monotonic() + (self.grace if seconds is None else seconds)
        while (problem := self.problem()) is not None and time.monotonic() < deadline:
            time.sleep(1.0)
        return problem

    def session(self) -> rpc.RPCSession:
        """An RPC session on the board; :class:`BoardLost` if it is not there."""
        problem = self.problem()
        if problem is not None:
            raise BoardLost(f"{self}: {problem}")
        try:
            url, port, matchkey = self._ask_tracker(
                [base.TrackerCode.REQUEST, self.key, "", 1], timeout=self.timeout)
            return rpc.connect(url, port, matchkey, session_timeout=self.timeout)
        except (OSError, RuntimeError) as err:
            raise BoardLost(f"{self}: no session within {self.timeout:.0f} s ({err})") from err

    # -- MetaSchedule ---------------------------------------------------------------------

    def export(self, lib) -> str:
        """``lib`` as a shared library the board's RPC server loads (``.tar``, MetaSchedule's
        default, does not load on a board); cross-linked with ``cross_cc`` when set."""
        from tvm.support import cc  # pylint: disable=import-outside-toplevel

        path = os.path.join(tempfile.mkdtemp(prefix="tvm_deconv_build_"), "candidate.so")
        lib.export_library(path, fcompile=cc.cross_compiler(self.cross_cc) if self.cross_cc
                           else cc.create_shared)
        return path

    def load(self, lib):
        """``lib`` exported, uploaded and loaded in a new session: (session, remote module)."""
        path = self.export(lib)
        try:
            session = self.session()
            session.upload(path)
        finally:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return session, session.load_module(os.path.basename(path))

    def builder(self):
        """A :class:`~tvm_deconv.tuning.PooledBuilder` exporting shared libraries for the
        board (its workers live for the whole tuning run; ``close()`` stops them)."""
        return PooledBuilder(f_export=functools.partial(_export, self))

    def runner(self):
        """RPCRunner measuring on the board (see :class:`_BoardRunner`)."""
        return _BoardRunner(self)


def _export(board: Board, lib) -> str:
    return board.export(lib)


def create_session(rpc_config) -> rpc.RPCSession:
    """RPCRunner ``f_create_session``: fails at once when the board is gone."""
    return Board(rpc_config.tracker_host, rpc_config.tracker_port, rpc_config.tracker_key,
                 timeout=rpc_config.session_timeout_sec).session()


@derived_object
class _BoardRunner(ms.runner.RPCRunner._cls):  # pylint: disable=protected-access
    """MetaSchedule's RPCRunner with :func:`create_session`, a hard per-trial limit (a board
    that vanished from the network never closes its socket, so a trial still running
    ``timeout`` + 30 s after it started is killed and reported as a timeout), and CPU
    candidates sent to device ``cpu``: TVM 0.27's RPCRunner passes the target kind, and
    ``session.device("llvm")`` raises "Unknown device: llvm"."""

    def __init__(self, board: Board):
        super().__init__(
            ms.runner.RPCConfig(tracker_host=board.host, tracker_port=board.port,
                                tracker_key=board.key, session_timeout_sec=int(board.timeout)),
            f_create_session=create_session)
        self.pool.shutdown()
        self.pool = PopenPoolExecutor(max_workers=1, timeout=board.timeout + 30)

    def run(self, runner_inputs):
        return super().run([ms.runner.RunnerInput(
            inp.artifact_path, "cpu" if inp.device_type == "llvm" else inp.device_type,
            inp.args_info) for inp in runner_inputs])
