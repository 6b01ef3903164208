"""One engine, many controllers: each data directory has an owner label of its own, made once,
and one controller's reconcile leaves another's containers and cgroups alone."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from controller.adapters.runtime.cgroups import remove_owned_parents, run_parent
from controller.errors import ConfigError
from controller.settings import Settings

if TYPE_CHECKING:
    from docker import DockerClient

GENERATED = re.compile(r"^sandgate-[0-9a-f]{12}$")


@pytest.fixture(autouse=True)
def no_explicit_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDGATE_OWNER", raising=False)


def test_each_data_directory_gets_an_owner_of_its_own(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path / "a").resolved_owner()
    second = Settings(data_dir=tmp_path / "b").resolved_owner()
    assert GENERATED.match(first) and GENERATED.match(second)
    assert first != second
    assert (tmp_path / "a" / "owner").read_text() == first + "\n"
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == ["owner"]  # no draft


def test_the_same_data_directory_keeps_its_owner(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).resolved_owner()
    assert Settings(data_dir=tmp_path).resolved_owner() == first
    assert Settings(data_dir=tmp_path).resolved_owner() == first


def test_threads_starting_at_once_agree(tmp_path: Path) -> None:
    barrier = threading.Barrier(16)
    found: list[str] = []

    def resolve() -> None:
        barrier.wait()
        found.append(Settings(data_dir=tmp_path).resolved_owner())

    threads = [threading.Thread(target=resolve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 16 and len(set(found)) == 1


def test_processes_starting_at_once_agree(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from controller.settings import Settings; "
            "print(Settings(data_dir=Path(sys.argv[1])).resolved_owner())")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data")],
                                  stdout=subprocess.PIPE, text=True) for _ in range(6)]
    owners = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert len(owners) == 1 and GENERATED.match(owners.pop())


def test_an_explicit_owner_wins_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDGATE_OWNER", "ci-runner-7")
    assert Settings(data_dir=tmp_path).resolved_owner() == "ci-runner-7"
    assert Settings(data_dir=tmp_path, owner="other").resolved_owner() == "other"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["", "\n", "two words\n", "x" * 65, "../../etc\n",
                                     "sandgate-abc\nsecond line\n"])
def test_a_corrupted_owner_file_is_refused_by_name(tmp_path: Path, content: str) -> None:
    (tmp_path / "owner").write_text(content)
    with pytest.raises(ConfigError, match=r"owner.*not an owner label") as refused:
        Settings(data_dir=tmp_path).resolved_owner()
    assert str(tmp_path / "owner") in str(refused.value)
    assert (tmp_path / "owner").read_text() == content  # never overwritten


def test_a_hand_written_owner_is_kept(tmp_path: Path) -> None:
    (tmp_path / "owner").write_text("team-blue\n")
    assert Settings(data_dir=tmp_path).resolved_owner() == "team-blue"


def test_one_owners_reconcile_leaves_anothers_cgroups(tmp_path: Path) -> None:
    mine, theirs = "sandgate-aaaaaaaaaaaa", "sandgate-bbbbbbbbbbbb"
    for hierarchy in ("memory", "pids"):
        for owner in (mine, theirs):
            (tmp_path / hierarchy / run_parent(owner, "run-1")).mkdir(parents=True)
    remove_owned_parents(mine, root=tmp_path)
    for hierarchy in ("memory", "pids"):
        assert not (tmp_path / hierarchy / "sandgate" / mine).exists()
        assert (tmp_path / hierarchy / run_parent(theirs, "run-1")).is_dir()


@pytest.mark.docker
def test_a_second_controller_leaves_the_firsts_containers_running(tmp_path: Path) -> None:
    from controller.adapters.runtime.docker import DockerRuntime
    from controller.bootstrap import open_controller
    from controller.core.ports import OWNER_LABEL, SUBMISSION_LABEL

    first = open_controller(Settings(data_dir=tmp_path / "a"))
    second = open_controller(Settings(data_dir=tmp_path / "b"))
    assert isinstance(first.runtime, DockerRuntime) and isinstance(second.runtime, DockerRuntime)
    owner = Settings(data_dir=tmp_path / "a").resolved_owner()
    assert first.runtime.owner == owner != second.runtime.owner
    client = first.runtime.client
    container = client.containers.run(
        "sandgate/python:latest", ["python3", "-c", "import time; time.sleep(120)"],
        detach=True, network_mode="none", labels={OWNER_LABEL: owner,
                                                  SUBMISSION_LABEL: "owner-test"})
    try:
        second.reconcile()  # what a second controller does when it starts
        container.reload()
        assert container.status == "running"
        assert first.runtime.remove_owned() == [container.id]  # it was the first's all along
    finally:
        if _exists(client, container.id):
            container.remove(force=True)
        for runtime in (first.runtime, second.runtime):
            runtime.client.close()


def _exists(client: DockerClient, container_id: str) -> bool:
    import docker.errors

    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


def test_a_data_directory_of_an_earlier_release_keeps_the_old_default(tmp_path: Path) -> None:
    # Its containers were labelled "sandgate": a new label would leave a crash's leftovers
    # (perhaps still running hostile code) to no one's reconcile.
    (tmp_path / "sandgate.db").write_bytes(b"")
    assert Settings(data_dir=tmp_path).resolved_owner() == "sandgate"
    assert (tmp_path / "owner").read_text() == "sandgate\n"
