"""Chaos fixtures: a data directory, a CLI bound to it, and the invariant check."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.settings import Settings
from controller.tools.invariants import check
from tests.conftest import owned_containers

BIN = Path(sys.executable).parent


@dataclass
class Site:
    data: Path
    owner: str

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data, owner=self.owner)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SANDGATE_CRASH_AT"}
        return {**env, "SANDGATE_DATA_DIR": str(self.data), "SANDGATE_OWNER": self.owner,
                **extra}

    def sandgate(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "sandgate"), *args], capture_output=True, text=True,
                              env=self.env(**extra), timeout=180, check=False)

    def invariants(self) -> list[str]:
        return check(self.settings, containers=owned_containers(self.owner))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(data=tmp_path / "data", owner=f"sandgate-chaos-{tmp_path.name[-20:]}")
