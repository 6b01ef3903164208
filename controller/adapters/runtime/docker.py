"""The Docker runtime: the only module that imports ``docker``.

Each run is a throwaway container created from a ``RunSpec`` with every hardening option
set explicitly, watched while it runs (output caps, cgroup samples, a monotonic deadline),
inspected after it stops, and force-removed whatever happened.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit
from docker.utils.socket import frames_iter

from controller.adapters.runtime.audit import CHECKS, audit
from controller.adapters.runtime.capture import StreamReader
from controller.adapters.runtime.cgroups import (
    CgroupReader,
    Sample,
    final_sample,
    remove_owned_parents,
    remove_parent,
    run_parent,
)
from controller.adapters.runtime.kmsg import (
    KmsgWatch,
    audit_source,
    forks_rejected,
    open_audit_log,
    tripwires,
)
from controller.adapters.runtime.netns import HeldNetns, NetnsError
from controller.adapters.runtime.observe import observe
from controller.core.models import AuditSource, Phase
from controller.core.ports import (
    CODE_MOUNT,
    OWNER_LABEL,
    PHASE_LABEL,
    SUBMISSION_LABEL,
    WORKSPACE_MOUNT,
    KilledFromOutsideError,
    RunResult,
    RunSpec,
)
from controller.errors import (
    ContainerAuditError,
    RuntimeUnavailableError,
)

SAMPLE_INTERVAL_S = 0.02
# The sandbox's first process waits for a line on the attach stream before it becomes the
# code (its stdin then /dev/null, as without the gate): what must be in place before the code
# runs (its network namespace held) is taken while it waits.
GATE = ("/bin/sh", "-c", 'read -r _ || exit 125; exec "$@" </dev/null', "sandbox")
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerRuntime:
    """``SandboxRuntime`` on the local Docker engine."""

    def __init__(self, client: docker.DockerClient | None = None, *, owner: str = "sandgate"):
        try:
            self.client = client or docker.from_env(timeout=60)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc
        self.owner = owner
        self._cgroup_driver: str | None = None

    def ping(self) -> None:
        try:
            self.client.ping()
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc

    def run(self, spec: RunSpec) -> RunResult:
        parent = self._run_parent(spec)
        try:
            return self._run_under(spec, parent)
        finally:
            if parent is not None:
                remove_parent(parent)

    def _run_parent(self, spec: RunSpec) -> str | None:
        """A parent cgroup of the run's own (cgroupfs driver only: the systemd driver wants
        slices), where the kernel's counters outlive the container."""
        if self._cgroup_driver is None:
            try:
                self._cgroup_driver = str(self.client.info().get("CgroupDriver", ""))
            except _ENGINE_ERRORS as exc:
                raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc
        if self._cgroup_driver != "cgroupfs":
            return None
        return run_parent(self.owner, f"{spec.submission_id}-{spec.phase.value}-"
                                      f"{secrets.token_hex(4)}")

    def _run_under(self, spec: RunSpec, parent: str | None) -> RunResult:
        try:
            container = self.client.containers.create(**self._create_args(spec, parent))
        except docker.errors.ImageNotFound as exc:
            raise RuntimeUnavailableError(
                f"image {spec.image!r} ({spec.profile.image}) not found: run `sandgate images "
                "build`") from exc
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot create the sandbox container: {exc}") from exc
        try:
            failed = audit(container.attrs)  # create() answers with the engine's inspect
            if failed:
                raise ContainerAuditError(
                    "the sandbox container failed its configuration audit and was not "
                    "started: " + "; ".join(failed))
            result = self._supervise(container, spec, parent)
            checks = len(CHECKS)
            return replace(result, observation=result.observation.model_copy(
                update={"audit_checks": checks}))
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"the sandbox container failed: {exc}") from exc
        finally:
            self._remove(container)

    def remove_owned(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove this controller's containers (but ``keep``'s) and, once none is kept, the
        run parent cgroups a crash left behind."""
        try:
            found = self.client.containers.list(
                all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"})
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot list sandbox containers: {exc}") from exc
        removed = []
        for container in found:
            if container.labels.get(SUBMISSION_LABEL) not in keep:
                self._remove(container)
                removed.append(container.id)
        if not keep:
            remove_owned_parents(self.owner)
        return removed

    def audit_source(self) -> AuditSource:
        """Which kernel audit source a run would read its seccomp kills from."""
        log = open_audit_log()
        try:
            return audit_source(log)
        finally:
            if log is not None:
                log.close()

    def image_id(self, image: str) -> str:
        try:
            return str(self.client.images.get(image).id)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"image {image!r} is not available: {exc}") from exc

    def has_image(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot inspect image {image!r}: {exc}") from exc
        return True

    def image_label(self, image: str, key: str) -> str | None:
        """A label of a local image; None when the image or the label is missing."""
        try:
            labels = self.client.images.get(image).labels or {}
        except docker.errors.ImageNotFound:
            return None
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot inspect image {image!r}: {exc}") from exc
        value = labels.get(key)
        return None if value is None else str(value)

    def pull(self, image: str) -> bool:
        """Try a registry; False (not an error) when none answers or the image is not there."""
        try:
            self.client.images.pull(image)
        except _ENGINE_ERRORS:
            return False
        return True

    def import_rootfs(self, tarball: Path, image: str) -> None:
        repository, _, tag = image.partition(":")
        try:
            self.client.api.import_image_from_file(str(tarball), repository=repository,
                                                   tag=tag or "latest")
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot import {tarball} as {image}: {exc}") from exc

    def build(self, context: Path, image: str, buildargs: dict[str, str],
              labels: dict[str, str] | None = None) -> str:
        try:
            built, _ = self.client.images.build(path=str(context), tag=image,
                                                buildargs=buildargs, rm=True, pull=False,
                                                labels=labels or {})
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot build {image} from {context}: {exc}") from exc
        return str(built.id)

    def _create_args(self, spec: RunSpec, parent: str | None = None) -> dict[str, Any]:
        limits = spec.profile.limits
        return {
            **({"cgroup_parent": f"/{parent}"} if parent is not None else {}),
            "image": spec.image,
            "command": [*GATE, *spec.command],
            "user": f"{spec.uid}:{spec.uid}",
            "working_dir": WORKSPACE_MOUNT,
            "environment": dict(spec.env),
            "hostname": "sandbox",
            "network_mode": "bridge" if spec.network else "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs_bytes},"
                              f"nr_inodes={limits.tmpfs_inodes},mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true",
                             f"seccomp={json.dumps(spec.profile.seccomp)}"],
            "privileged": False,
            "pids_limit": limits.pids,
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,
            "nano_cpus": int(limits.cpus * 1e9),
            # msgqueue 0: no POSIX message queue can be created in /dev/mqueue (its bytes are
            # accounted per uid, which every sandbox shares).
            # fsize: no sparse file past the profile's size (sizes the sandbox reports stay
            # sane); core 0: a crash writes no core file anywhere.
            "ulimits": [Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
                        Ulimit(name="msgqueue", soft=0, hard=0),
                        Ulimit(name="fsize", soft=limits.effective_file_bytes,
                               hard=limits.effective_file_bytes),
                        Ulimit(name="core", soft=0, hard=0)],
            "ipc_mode": "private",
            # /dev/shm is the other writable tmpfs: capped like /tmp, not the engine's 64 MiB.
            "shm_size": limits.tmpfs_bytes,
            "cgroupns": "private",
            "mounts": [
                Mount(WORKSPACE_MOUNT, str(spec.workspace_dir), type="bind", read_only=False),
                Mount(CODE_MOUNT, str(spec.code_dir), type="bind", read_only=True),
            ],
            "labels": {OWNER_LABEL: self.owner, SUBMISSION_LABEL: spec.submission_id,
                       PHASE_LABEL: spec.phase.value},
            # Output is taken from the attach stream, capped; nothing is logged to disk.
            "log_config": LogConfig(type="none"),
            "stdin_open": True,  # the gate's line only: the code's stdin is /dev/null
            "detach": True,
        }

    def _supervise(self, container: Container, spec: RunSpec, parent: str | None) -> RunResult:
        limits = spec.profile.limits
        sock = self.client.api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        reader = StreamReader(sock, frames_iter(sock, tty=False), limits.output_bytes)
        netns = HeldNetns.NONE
        stopped = threading.Event()
        sampler = _Sampler(container, stopped)
        kernel_log = open_audit_log()  # before the start: only this run's window is read
        # The kernel says, once per cgroup, when the pids limit refused a fork; a sampler can
        # miss a bomb that dies between two samples, the kernel's line cannot.
        kernel_messages = KmsgWatch.open()
        since = time.time()
        try:
            reader.start()
            container.start()
            netns = self._hold_netns(container)
            reader.open_gate()
            # The code's time starts when the engine has started it: an engine slow to start
            # a container under load is not the code running past its limit (a CI load test
            # saw a print() "time out" so). Deadlines use the monotonic clock: a wall-clock
            # jump neither shortens nor extends them.
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
            status = container.wait(timeout=30)
            wall_ms = (time.monotonic() - started) * 1000
            stopped.set()
            sampler.join(timeout=5)
            container.reload()
            tripped, incomplete = tripwires(kernel_log, spec.uid)
            # The kernel's own totals for the run, which no sampling period can miss.
            sample = sampler.result if parent is None else sampler.result.merge(
                final_sample(parent))
            traffic, unread = netns.counted()
            observation = observe(spec, container.attrs, status, sample,
                                  (reader.out.summary(), reader.err.summary()), traffic,
                                  wall_ms=wall_ms, timed_out=timed_out, tripped=tripped,
                                  source=audit_source(kernel_log)).model_copy(
                update={"incomplete": incomplete or unread})
            if forks_rejected(kernel_messages, str(container.id)):
                observation = observation.model_copy(update={"pids_limit_hit": True})
            changes: tuple[tuple[str, str], ...] = ()
            if spec.phase is Phase.BOUNDED and not observation.succeeded:
                # Evidence for a quarantine. The diff costs the engine a walk of the layer
                # (a third of a second), and a clean run with a read-only root has none to show.
                changes = tuple((str(c.get("Kind")), str(c.get("Path")))
                                for c in container.diff() or [])
                observation = observation.model_copy(update={"container_changes": len(changes)})
            ours = int(timed_out or reader.over_cap.is_set())
            if observation.signal is not None and self._killed_outside(container, since, ours):
                # A run cut short by a stranger tells nothing about the code. Said only on
                # the engine's own record: an exit status of 137 is the code's to choose.
                raise KilledFromOutsideError(
                    "the sandbox container was killed from outside Sandgate mid-run (the "
                    "engine recorded a kill that Sandgate did not issue)", observation)
            return RunResult(observation, bytes(reader.out.data), bytes(reader.err.data), changes)
        finally:
            # Whatever failed above, nothing outlives the run: not the sampler, not the stream.
            stopped.set()
            reader.hang_up()
            for thread in (reader, sampler):
                if thread.ident is not None:
                    thread.join(timeout=5)
            reader.close()
            netns.close()
            for log in (kernel_log, kernel_messages):
                if log is not None:
                    log.close()

    @staticmethod
    def _hold_netns(container: Container) -> HeldNetns:
        """The network namespace of the container's first process, waiting at its gate."""
        container.reload()
        pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        try:
            if pid <= 0:
                raise NetnsError("the sandbox container has no running process")
            return HeldNetns.hold(pid, str(container.id))
        except OSError as exc:
            raise RuntimeUnavailableError(
                f"cannot hold the sandbox's network namespace: {exc}") from exc

    def _killed_outside(self, container: Container, since: float, ours: int) -> bool:
        """Whether the engine recorded more kills of ``container`` than the ``ours`` that
        Sandgate issued (its kill at a deadline or an output cap)."""
        events = self.client.events(
            since=f"{since - 1:.9f}", until=f"{time.time():.9f}", decode=True,
            filters={"type": "container", "container": str(container.id), "event": "kill"})
        try:
            kills = sum(1 for event in events if event.get("Action") == "kill")
        finally:
            events.close()
        return kills > ours

    def _remove(self, container: Container) -> None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(
                f"cannot remove sandbox container {container.short_id}: {exc}") from exc


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
        try:
            self.container.reload()
        except _ENGINE_ERRORS:
            return
        pid = int(self.container.attrs.get("State", {}).get("Pid") or 0)
        if pid <= 0:
            return
        reader = CgroupReader.for_pid(pid, owner=self.container.id)
        while True:
            self.result = self.result.merge(reader.sample())
            if self.stopped.wait(SAMPLE_INTERVAL_S):
                return
