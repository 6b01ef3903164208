"""The Docker runtime (with ``sandbox``, the only modules that import ``docker``).

Each run is a throwaway container created from a ``RunSpec`` with every hardening option
set explicitly and audited before it starts; once started it waits at its gate, and its run
(``sandbox.DockerSandbox``) is watched, inspected after it stops, and force-removed whatever
happened.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit
from docker.utils.socket import frames_iter

from controller.adapters.runtime.audit import audit
from controller.adapters.runtime.capture import StreamReader
from controller.adapters.runtime.cgroups import remove_owned_parents, remove_parent, run_parent
from controller.adapters.runtime.kmsg import audit_source, open_audit_log
from controller.adapters.runtime.netns import HeldNetns, NetnsError
from controller.adapters.runtime.reaper import Reaper
from controller.adapters.runtime.sandbox import ENGINE_ERRORS, DockerSandbox, remove
from controller.core.models import AuditSource
from controller.core.ports import (
    CODE_MOUNT,
    OWNER_LABEL,
    PHASE_LABEL,
    SUBMISSION_LABEL,
    WORKSPACE_MOUNT,
    RunResult,
    RunSpec,
)
from controller.errors import (
    ContainerAuditError,
    RuntimeUnavailableError,
)

# The entrypoint of every sandbox (whatever the image's own): its first process waits for a
# line on the attach stream before it becomes the code, whose stdin is then /dev/null. What
# must be in place before the code runs (its network namespace held, its workspace and code
# filled in) is done while it waits. (dash also exports PWD: in both runs alike.)
GATE = ("/bin/sh", "-c", 'read -r _ || exit 125; exec "$@" </dev/null', "sandbox")
# /etc/hosts of a sandbox without network: the engine writes none for a container whose
# networking is disabled (the image's is shadowed by an empty one), and localhost must resolve.
# Each container has a file of its own, in its code's scratch filesystem (HOSTS_NAME): one
# file bound into every sandbox would let them signal each other (flock, inotify on a shared
# inode), and one beside the run's directories would show their paths, the phase among them,
# in mountinfo. There it shows as the same file of a tmpfs in both runs.
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
HOSTS_NAME = ".hosts"


class DockerRuntime:
    """``SandboxRuntime`` on the local Docker engine."""

    def __init__(self, client: docker.DockerClient | None = None, *, owner: str = "sandgate"):
        try:
            self.client = client or docker.from_env(timeout=60)
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc
        self.owner = owner
        self.reaper = Reaper()  # removes the containers of ended runs off their path
        self._cgroup_driver: str | None = None
        if self.client.api.base_url.startswith("http+docker://"):
            # A local socket: no proxy or .netrc applies, and looking for them in the
            # environment is a fifth of the CPU of each of the ~20 calls of a submission.
            self.client.api.trust_env = False

    def ping(self) -> None:
        try:
            self.client.ping()
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc

    def run(self, spec: RunSpec) -> RunResult:
        return self.start(spec).run()

    def start(self, spec: RunSpec) -> DockerSandbox:
        """Create, audit and start the sandbox; it waits at its gate (``DockerSandbox``)."""
        parent = self._run_parent(spec)
        try:
            hosts = None if spec.network else _hosts_file(spec)
            return self._start_under(spec, parent, hosts)
        except BaseException:
            if parent is not None:
                remove_parent(parent)
            raise

    def _run_parent(self, spec: RunSpec) -> str | None:
        """A parent cgroup of the run's own (cgroupfs driver only: the systemd driver wants
        slices), where the kernel's counters outlive the container."""
        if self._cgroup_driver is None:
            try:
                self._cgroup_driver = str(self.client.info().get("CgroupDriver", ""))
            except ENGINE_ERRORS as exc:
                raise RuntimeUnavailableError(f"the Docker engine does not answer: {exc}") from exc
        if self._cgroup_driver != "cgroupfs":
            return None
        return run_parent(self.owner, f"{spec.submission_id}-{spec.phase.value}-"
                                      f"{secrets.token_hex(4)}")

    def _start_under(self, spec: RunSpec, parent: str | None, hosts: Path | None
                     ) -> DockerSandbox:
        try:
            container = self.client.containers.create(**self._create_args(spec, parent, hosts))
        except docker.errors.ImageNotFound as exc:
            raise RuntimeUnavailableError(
                f"image {spec.image!r} ({spec.profile.image}) not found: run `sandgate images "
                "build`") from exc
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot create the sandbox container: {exc}") from exc
        reader: StreamReader | None = None
        try:
            failed = audit(container.attrs, network=spec.network)  # inspect, as answered
            if failed:
                raise ContainerAuditError(
                    "the sandbox container failed its configuration audit and was not "
                    "started: " + "; ".join(failed))
            sock = self.client.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            reader = StreamReader(sock, frames_iter(sock, tty=False),
                                  spec.profile.limits.output_bytes)
            since = time.time()
            reader.start()
            container.start()
            return DockerSandbox(self.client, spec, container, parent, reader,
                                 _hold_netns(container), since, self.reaper)
        except BaseException as exc:
            if reader is not None:
                reader.hang_up()
                reader.join(timeout=5)
                reader.close()
            remove(container)
            if isinstance(exc, ENGINE_ERRORS):
                raise RuntimeUnavailableError(f"cannot start the sandbox container: {exc}"
                                              ) from exc
            raise

    def remove_owned(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove this controller's containers (but ``keep``'s) and, once none is kept, the
        run parent cgroups a crash left behind."""
        self.settle()
        try:
            found = self.client.containers.list(
                all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"})
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot list sandbox containers: {exc}") from exc
        removed = []
        for container in found:
            if container.labels.get(SUBMISSION_LABEL) not in keep:
                remove(container)
                removed.append(container.id)
        if not keep:
            remove_owned_parents(self.owner)
        return removed

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until the containers of ended runs are removed; whether they were in time."""
        return self.reaper.settle(timeout)

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
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"image {image!r} is not available: {exc}") from exc

    def has_image(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot inspect image {image!r}: {exc}") from exc
        return True

    def image_label(self, image: str, key: str) -> str | None:
        """A label of a local image; None when the image or the label is missing."""
        try:
            labels = self.client.images.get(image).labels or {}
        except docker.errors.ImageNotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot inspect image {image!r}: {exc}") from exc
        value = labels.get(key)
        return None if value is None else str(value)

    def pull(self, image: str) -> bool:
        """Try a registry; False (not an error) when none answers or the image is not there."""
        try:
            self.client.images.pull(image)
        except ENGINE_ERRORS:
            return False
        return True

    def import_rootfs(self, tarball: Path, image: str) -> None:
        repository, _, tag = image.partition(":")
        try:
            self.client.api.import_image_from_file(str(tarball), repository=repository,
                                                   tag=tag or "latest")
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot import {tarball} as {image}: {exc}") from exc

    def build(self, context: Path, image: str, buildargs: dict[str, str],
              labels: dict[str, str] | None = None) -> str:
        try:
            built, _ = self.client.images.build(path=str(context), tag=image,
                                                buildargs=buildargs, rm=True, pull=False,
                                                labels=labels or {})
        except ENGINE_ERRORS as exc:
            raise RuntimeUnavailableError(f"cannot build {image} from {context}: {exc}") from exc
        return str(built.id)

    def _create_args(self, spec: RunSpec, parent: str | None = None, hosts: Path | None = None
                     ) -> dict[str, Any]:
        limits = spec.profile.limits
        return {
            **({"cgroup_parent": f"/{parent}"} if parent is not None else {}),
            "image": spec.image,
            "entrypoint": list(GATE),
            "command": list(spec.command),
            "user": f"{spec.uid}:{spec.uid}",
            "working_dir": WORKSPACE_MOUNT,
            "environment": dict(spec.env),
            "hostname": "sandbox",
            "network_mode": "bridge" if spec.network else "none",
            # Disabled as well as none: the engine then neither builds a network sandbox nor
            # adds its prestart hook (its own binary, run twice per container: about 70 ms of
            # CPU and 90 ms of every start on these cores). The container still gets a network
            # namespace of its own with only lo, and no /etc/hosts (HOSTS) or /etc/resolv.conf.
            "network_disabled": not spec.network,
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
                *([] if hosts is None else
                  [Mount("/etc/hosts", str(hosts), type="bind", read_only=True)]),
            ],
            "labels": {OWNER_LABEL: self.owner, SUBMISSION_LABEL: spec.submission_id,
                       PHASE_LABEL: spec.phase.value},
            # Output is taken from the attach stream, capped; nothing is logged to disk.
            "log_config": LogConfig(type="none"),
            "stdin_open": True,  # the gate's line only: the code's stdin is /dev/null
            "detach": True,
        }



def _hosts_file(spec: RunSpec) -> Path:
    """The /etc/hosts of one sandbox, in its code directory (HOSTS), read-only to all; it
    goes with that directory."""
    path = spec.code_dir / HOSTS_NAME
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o444)
    with os.fdopen(descriptor, "w") as file:
        file.write(HOSTS)
    return path


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
