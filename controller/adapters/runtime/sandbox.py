"""One started sandbox: a hardened container whose first process waits at its gate.

``DockerRuntime.start`` creates, audits and starts the container, attaches to its streams
and holds its network namespace; nothing of the code has run yet. ``run`` opens the gate and
watches the run (output caps, cgroup samples, a monotonic deadline), inspects the container
after it stops and removes it; ``discard`` removes it unrun. Either way nothing outlives it:
not the container, its run parent cgroup, the stream, the sampler or the namespace. (After a
run the container and its cgroup go a moment later, by the runtime's ``Reaper``.)

Starting apart from running lets a container's cold start overlap other work (the real
run's start, the dry run), since what a run must not see before it starts (its workspace,
its code) is filled into mounts that already exist.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from functools import partial

import docker
import docker.errors
import requests
from docker.models.containers import Container

from controller.adapters.runtime.audit import CHECKS, audit
from controller.adapters.runtime.capture import StreamReader
from controller.adapters.runtime.cgroups import CgroupReader, Sample, final_sample, remove_parent
from controller.adapters.runtime.kmsg import (
    KmsgWatch,
    audit_source,
    kernel_said,
    open_audit_log,
    tripwires,
)
from controller.adapters.runtime.netns import HeldNetns
from controller.adapters.runtime.observe import observe
from controller.adapters.runtime.reaper import Reaper
from controller.core.models import Phase
from controller.core.ports import KilledFromOutsideError, RunResult, RunSpec
from controller.errors import ContainerAuditError, RuntimeUnavailableError, SandboxGoneError

SAMPLE_INTERVAL_S = 0.02
WAIT_GRACE_S = 30.0  # for the engine to report a container's end once its streams closed
REAPER_BACKLOG = 32  # removals left to the reaper at most; past them a run removes its own
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerSandbox:
    """A started container waiting at its gate for one run (see the module's docstring)."""

    def __init__(self, client: docker.DockerClient, spec: RunSpec, container: Container,
                 parent: str | None, reader: StreamReader, netns: HeldNetns, since: float,
                 reaper: Reaper | None = None) -> None:
        self.client, self.spec, self.container, self.parent = client, spec, container, parent
        self.reader, self.netns, self.since, self.reaper = reader, netns, since, reaper
        self._done = False

    def run(self) -> RunResult:
        """Open the gate, watch the run to its end, and remove the container: after a run
        the engine saw end, by the ``reaper`` if there is one (the result does not wait for
        it); after any failure, now (the container may still run, and nothing may)."""
        if self._done:
            raise RuntimeUnavailableError("a sandbox runs once")
        ended = False
        try:
            result = self._supervise()
            ended = True
            return replace(result, observation=result.observation.model_copy(
                update={"audit_checks": len(CHECKS)}))
        except (*ENGINE_ERRORS, OSError) as exc:  # OSError: the gate's line was not sent
            raise RuntimeUnavailableError(f"the sandbox container failed: {exc}") from exc
        finally:
            self._end(later=ended)

    def discard(self) -> None:
        """Remove the container and everything held for it (run or not; once), now."""
        self._end(later=False)

    def _end(self, *, later: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.reader.hang_up()
            if self.reader.ident is not None:
                self.reader.join(timeout=5)
            self.reader.close()
            self.netns.close()
        finally:
            removal = partial(_remove, self.container, self.parent)  # not the run's output
            if later and self.reaper is not None and self.reaper.pending < REAPER_BACKLOG:
                self.reaper.put(removal)
            else:  # a backlog means the engine is slow to remove: the runs wait for it again
                removal()

    def _supervise(self) -> RunResult:
        spec, container, reader, limits = (self.spec, self.container, self.reader,
                                           self.spec.profile.limits)
        stopped = threading.Event()
        sampler = _Sampler(container, stopped)
        kernel_log = open_audit_log()  # before the gate opens: only this run's window is read
        # The kernel says, once per cgroup, when the pids limit refused a fork; a sampler can
        # miss a bomb that dies between two samples, the kernel's line cannot.
        kernel_messages = KmsgWatch.open()
        try:
            _still_fit(container, network=spec.network)
            reader.open_gate()
            # The code's time starts at the gate: an engine slow to start a container under
            # load is not the code running past its limit (a CI load test saw a print() "time
            # out" so). Deadlines use the monotonic clock: a wall-clock jump neither shortens
            # nor extends them.
            started = time.monotonic()
            sampler.start()
            reader.wake.wait(timeout=limits.wall_time_s)
            # An open stream at the deadline is a timeout only if the code still runs: under
            # load the engine can close the stream of a process that ended in time late.
            timed_out = (reader.is_alive() and not reader.over_cap.is_set()
                         and _running(container))
            if reader.is_alive() and (timed_out or reader.over_cap.is_set()):
                _kill(container)
            reader.join(timeout=30)
            if reader.failure is not None or reader.is_alive():
                raise RuntimeUnavailableError(
                    f"lost the sandbox's output stream: {reader.failure}")
            # Asked only now, on a request of its own: an engine that went away meanwhile
            # (a daemon restarted) fails it, and the run is not trusted; a wait asked at the
            # gate would be answered by a stopping daemon as if the run had ended well.
            status = container.wait(timeout=WAIT_GRACE_S)
            wall_ms = (time.monotonic() - started) * 1000
            stopped.set()
            sampler.join(timeout=5)
            container.reload()
            tripped, incomplete = tripwires(kernel_log, spec.uid)
            # The kernel's own totals for the run, which no sampling period can miss.
            sample = sampler.result if self.parent is None else sampler.result.merge(
                final_sample(self.parent))
            traffic, unread = self.netns.counted()
            observation = observe(spec, container.attrs, status, sample,
                                  (reader.out.summary(), reader.err.summary()), traffic,
                                  wall_ms=wall_ms, timed_out=timed_out, tripped=tripped,
                                  source=audit_source(kernel_log)).model_copy(
                update={"incomplete": incomplete or unread})
            said = kernel_said(kernel_messages, str(container.id))
            if said.fork_rejected:
                observation = observation.model_copy(update={"pids_limit_hit": True})
            if said.oom_kill:
                observation = observation.model_copy(update={"oom_killed": True})
            changes: tuple[tuple[str, str], ...] = ()
            if spec.phase is Phase.BOUNDED and not observation.succeeded:
                # Evidence for a quarantine. The diff costs the engine a walk of the layer
                # (a third of a second), and a clean run with a read-only root has none to show.
                changes = tuple((str(c.get("Kind")), str(c.get("Path")))
                                for c in container.diff() or [])
                observation = observation.model_copy(update={"container_changes": len(changes)})
            ours = int(timed_out or reader.over_cap.is_set())
            if observation.signal is not None and self._killed_outside(ours):
                # A run cut short by a stranger tells nothing about the code. Said only on
                # the engine's own record: an exit status of 137 is the code's to choose.
                raise KilledFromOutsideError(
                    "the sandbox container was killed from outside Sandgate mid-run (the "
                    "engine recorded a kill that Sandgate did not issue)", observation)
            return RunResult(observation, bytes(reader.out.data), bytes(reader.err.data), changes)
        finally:
            # Whatever failed above, nothing outlives the run: not the sampler, not the logs.
            stopped.set()
            if sampler.ident is not None:
                sampler.join(timeout=5)
            for log in (kernel_log, kernel_messages):
                if log is not None:
                    log.close()

    def _killed_outside(self, ours: int) -> bool:
        """Whether the engine recorded more kills of the container (since it was started)
        than the ``ours`` that Sandgate issued (its kill at a deadline or an output cap)."""
        events = self.client.events(
            since=f"{self.since - 1:.9f}", until=f"{time.time():.9f}", decode=True,
            filters={"type": "container", "container": str(self.container.id),
                     "event": "kill"})
        try:
            kills = sum(1 for event in events if event.get("Action") == "kill")
        finally:
            events.close()
        return kills > ours


def _remove(container: Container, parent: str | None) -> None:
    try:
        remove(container)
    finally:
        if parent is not None:
            remove_parent(parent)


def remove(container: Container) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return
    except ENGINE_ERRORS as exc:
        raise RuntimeUnavailableError(
            f"cannot remove sandbox container {container.short_id}: {exc}") from exc


def _still_fit(container: Container, *, network: bool) -> None:
    """A sandbox waiting at its gate (started ahead, or pooled) may have died, or been
    changed, while it waited: it runs only as it was audited when it was created."""
    if not _running(container):
        raise SandboxGoneError(
            f"the sandbox container stopped before its run ({container.status})")
    failed = audit(container.attrs, network=network)
    if failed:
        raise ContainerAuditError("the waiting sandbox container failed its configuration "
                                  "audit: " + "; ".join(failed))


def _running(container: Container) -> bool:
    container.reload()
    return str(container.status) == "running"


def _kill(container: Container) -> None:
    try:
        container.kill(signal="SIGKILL")
    except docker.errors.APIError as exc:
        # 409: it already stopped between the check and the kill, which is what we wanted.
        if exc.status_code != 409:
            raise


class _Sampler(threading.Thread):
    """Samples the container's cgroup counters until told to stop or the cgroup is gone."""

    def __init__(self, container: Container, stopped: threading.Event) -> None:
        super().__init__(daemon=True)
        self.container = container
        self.stopped = stopped
        self.result = Sample()

    def run(self) -> None:
        # The container as inspected just before its gate opened (``_still_fit``).
        pid = int(self.container.attrs.get("State", {}).get("Pid") or 0)
        if pid <= 0:
            return
        reader = CgroupReader.for_pid(pid, owner=self.container.id)
        while True:
            self.result = self.result.merge(reader.sample())
            if self.stopped.wait(SAMPLE_INTERVAL_S):
                return

