"""A dead or silent peer in a multi-process job ends every survivor with one line, not a C++ trace.

Without this, when one process of a ``jax.distributed`` job dies, the coordination service notices
after ``mesh.heartbeat_timeout_seconds`` and XLA aborts each survivor with a fatal log and a C++
stack trace (SIGABRT, exit -6) — and a survivor stuck in a collective with the dead peer has no
other way out. (jaxlib's ``missed_heartbeat_callback`` cannot be used from Python in jax 0.10: the
status it passes has no Python conversion.)

``PeerWatchdog`` gets there first: every process bumps a counter in the coordination service's
key-value store every ``period`` seconds and watches the others'; a peer whose counter has not
moved for ``stale_after`` seconds (half the heartbeat timeout), or a coordinator that stopped
answering, makes this process write one line to stderr and exit with ``PEER_LOST_EXIT_CODE`` (75,
EX_TEMPFAIL, as for preemption: the scheduler should restart the job, which resumes from the last
checkpoint). A process that finishes normally marks itself done, so its peers do not mistake a
clean exit for a death.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

PEER_LOST_EXIT_CODE = 75
_PREFIX = "dlm_jax/peers/"


def _die(message: str) -> None:
    # a leading newline: the line must not be glued to an unfinished progress bar
    os.write(2, f"\ndlm_jax: {message}; restart the job and it resumes from the last checkpoint\n".encode())
    os._exit(PEER_LOST_EXIT_CODE)


class PeerWatchdog(threading.Thread):
    """Daemon thread: heartbeat through ``client``'s key-value store; exit on a silent peer."""

    def __init__(self, client, process_id: int, num_processes: int, *, stale_after: float, period: float):
        super().__init__(name="dlm_jax-peer-watchdog", daemon=True)
        self.client, self.pid, self.n = client, int(process_id), int(num_processes)
        self.stale_after, self.period = float(stale_after), float(period)
        self._stop_event = threading.Event()
        self.pending = set(range(self.n)) - {self.pid}  # peers not yet marked done

    def _beat(self, count: int) -> None:
        self.client.key_value_set(f"{_PREFIX}alive/{self.pid}", str(count), allow_overwrite=True)

    def _read(self) -> dict[str, str]:
        return dict(self.client.key_value_dir_get(_PREFIX))

    def run(self) -> None:
        start = time.monotonic()
        seen = {p: (None, start) for p in range(self.n) if p != self.pid}  # peer -> (counter, when it moved)
        count = 0
        while not self._stop_event.wait(self.period if count else 0.0):
            count += 1
            try:
                self._beat(count)
                values = self._read()
            except Exception as err:  # noqa: BLE001 - the coordinator is gone: any RPC error means it
                if self._stop_event.is_set():
                    return
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                _die(f"process {self.pid} stops: the job's coordinator (process 0) stopped answering ({first})")
            now = time.monotonic()
            silent = []
            for peer, (last, moved) in list(seen.items()):
                if values.get(f"{_PREFIX}done/{peer}") is not None:
                    del seen[peer]
                    self.pending.discard(peer)
                    continue
                value = values.get(f"{_PREFIX}alive/{peer}")
                if value != last:
                    seen[peer] = (value, now)
                elif now - moved > self.stale_after:
                    silent.append(peer)
            if silent and not self._stop_event.is_set():
                _die(f"process {self.pid} stops: process {', '.join(map(str, silent))} of this job died or stopped "
                     f"answering for {self.stale_after:.0f} s")

    def announce_done(self) -> None:
        """Tell the peers this process ended normally (they stop watching it)."""
        try:
            self.client.key_value_set(f"{_PREFIX}done/{self.pid}", "1", allow_overwrite=True)
        except Exception:  # noqa: BLE001 - the job is ending; nothing left to tell
            pass

    def finish(self) -> None:
        """Stop watching and tell the peers this process ended normally."""
        self._stop_event.set()
        self.announce_done()


_WATCHDOG: PeerWatchdog | None = None


def start_peer_watchdog(heartbeat_timeout_seconds: float) -> PeerWatchdog | None:
    """Start the watchdog for the initialised ``jax.distributed`` job (once; None when the client or
    its key-value API is not there, e.g. a single process or another jax version)."""
    global _WATCHDOG
    if _WATCHDOG is not None:
        return _WATCHDOG
    try:
        from jax._src import distributed as dist_impl
        state = dist_impl.global_state
        client, pid, n = state.client, state.process_id, state.num_processes
    except (ImportError, AttributeError):
        return None
    if client is None or not n or n < 2 or not hasattr(client, "key_value_dir_get"):
        return None
    stale_after = max(2.0, float(heartbeat_timeout_seconds) / 2)
    _WATCHDOG = PeerWatchdog(client, pid, n, stale_after=stale_after, period=min(5.0, stale_after / 5))
    _WATCHDOG.start()
    atexit.register(stop_peer_watchdog)  # runs before jax's own shutdown hook (registered earlier)
    return _WATCHDOG


def stop_peer_watchdog() -> None:
    """At exit: keep watching until every peer is done too, for at most ``stale_after`` + two
    periods, then mark this process done and stop; safe to call more than once. A process ending
    without an uncaught exception says it is done *first*, so peers finishing at the same time
    release each other at once (each waiting for the other's mark cost the whole bound: 60 s
    with the default heartbeat).

    The wait matters when this process exits *because* a peer died (a collective with it raised in
    the main thread): jax's shutdown barrier would then abort with XLA's fatal log, while the
    watchdog, still running here, notices the silent peer and exits with its one line. On a clean
    exit it only waits for peers that are finishing too (jax's shutdown barrier waits for them
    anyway); a peer stuck for longer than the bound does not hold this process."""
    global _WATCHDOG
    watchdog, _WATCHDOG = _WATCHDOG, None
    if watchdog is None:
        return
    if getattr(sys, "last_value", None) is None and getattr(sys, "last_exc", None) is None:
        watchdog.announce_done()
    deadline = time.monotonic() + watchdog.stale_after + 2 * watchdog.period
    while watchdog.pending and watchdog.is_alive() and time.monotonic() < deadline:
        time.sleep(min(0.2, watchdog.period))
    watchdog.finish()
