"""The data directory's lock: a service or a reconcile alone, one-shot commands together,
never both; the kernel releases it with its process, however that ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from controller.adapters.fs.lock import LOCK_NAME

HOLD = """
import sys, time
from pathlib import Path

from controller.adapters.fs.lock import LOCK_NAME
from controller.adapters.fs.lock import hold
hold(Path(sys.argv[1]), alone=sys.argv[2] == "alone", who=sys.argv[3])
print("held", flush=True)
time.sleep(60)
"""


def holder(data: Path, mode: str, who: str = "sandgate serve") -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(data), mode, who],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def attempt(data: Path, mode: str) -> subprocess.CompletedProcess[str]:
    """``hold`` in a process of its own; its diagnostics on stdout if refused."""
    code = ("import sys\nfrom pathlib import Path\nfrom controller.adapters.fs.lock import hold\n"
            "from controller.errors import DataDirInUseError, SandgateError\n"
            "try:\n    hold(Path(sys.argv[1]), alone=sys.argv[2] == 'alone', who='tried')\n"
            "except DataDirInUseError as exc:\n    print(exc.diagnostics()); sys.exit(3)\n"
            "except SandgateError as exc:\n    print(exc.diagnostics()); sys.exit(4)\n")
    return subprocess.run([sys.executable, "-c", code, str(data), mode], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_service_holds_the_directory_alone(tmp_path: Path) -> None:
    service = holder(tmp_path, "alone")
    try:
        for mode in ("alone", "shared"):
            refused = attempt(tmp_path, mode)
            assert refused.returncode == 3, refused.stderr
            assert f"in use by sandgate serve (pid {service.pid})" in refused.stdout
            assert "data_dir_in_use" in refused.stdout
    finally:
        service.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        stop(service)
    assert attempt(tmp_path, "alone").returncode == 0


def test_one_shot_commands_share_it_and_keep_a_service_out(tmp_path: Path) -> None:
    first = holder(tmp_path, "shared")
    try:
        assert attempt(tmp_path, "shared").returncode == 0
        refused = attempt(tmp_path, "alone")
        assert refused.returncode == 3
        assert "one-shot commands" in refused.stdout
    finally:
        stop(first)



def test_a_link_in_its_place_is_never_followed_and_shared_holders_name_no_service(
        tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / LOCK_NAME).symlink_to(target)
    refused = attempt(tmp_path, "alone")
    assert refused.returncode == 4 and "must be a regular file" in refused.stdout
    assert target.read_text() == "keep me"
    (tmp_path / LOCK_NAME).unlink()
    stop(holder(tmp_path, "alone"))  # a service came and went
    one_shot = holder(tmp_path, "shared")
    try:
        refused = attempt(tmp_path, "alone")
        assert refused.returncode == 3 and "sandgate serve" not in refused.stdout
        assert "one-shot commands" in refused.stdout
    finally:
        stop(one_shot)
