"""Workspaces over the API: versions as submissions commit them, files read at any version,
and nothing outside a version tree."""

from __future__ import annotations

import pytest

from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio
FILE = "/v1/workspaces/default/files/{}"


async def test_each_commit_is_a_version_and_old_versions_stay_readable(api: Api) -> None:
    first = await api.submit("alice", "print(1)")
    second = await api.submit("alice", "print(2)")
    assert (first["version_after"], second["version_after"]) == (1, 2)
    view = (await api.get("alice", "/v1/workspaces/default")).json()
    assert view == {"name": "default", "version": 2, "versions": [0, 1, 2]}
    current = await api.get("alice", FILE.format("out.txt"))
    older = await api.get("alice", FILE.format("out.txt"), params={"version": 1})
    assert (current.content, older.content) == (b"print(2)", b"print(1)")
    for params in ({"version": 0}, {"version": 3}):
        answer = await api.get("alice", FILE.format("out.txt"), params=params)
        assert answer.status_code == 404, (params, answer.text)


@pytest.mark.parametrize("path", ["%2e%2e/%2e%2e/sandgate.db", "%2e/out.txt", "nope.txt",
                                  "out.txt%00"])
async def test_nothing_but_a_file_of_the_version_is_served(api: Api, path: str) -> None:
    await api.submit("alice", "print(1)")
    answer = await api.get("alice", FILE.format(path))
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"
