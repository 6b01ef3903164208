"""The console's page and assets, as served: a strict Content-Security-Policy and nosniff on
every one, nothing inline and nothing from other hosts, only the assets shipped (no path
reaches another file), and no script that turns a string into markup or code."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.resources import files

import pytest

from controller.console import ASSETS
from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio
STATIC = files("controller.console").joinpath("static")
# Each directive a console response must carry, written out here (not read from the code).
REQUIRED_CSP = {"default-src 'self'", "script-src 'self'", "style-src 'self'",
                "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'",
                "form-action 'none'", "require-trusted-types-for 'script'"}
# What no script may call: each parses a string as markup or as code.
SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
                   r"new Function|setTimeout\(\s*['\"`]|createContextualFragment|srcdoc")


class Page(HTMLParser):
    """What the page loads and whether anything is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.inline += [f"{tag} {name}" for name in found
                        if name.startswith("on") or name == "style"]
        if tag == "style":
            self.inline.append("style element")
        if tag == "script":
            self._in_script = True
            self.loads.append(found.get("src") or "")
        if tag == "link":
            self.loads.append(found.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script text")


def directives(policy: str) -> set[str]:
    return {part.strip() for part in policy.split(";")}


async def test_the_page_and_every_asset_carry_the_policy_and_nosniff(api: Api) -> None:
    paths = ["/"] + [f"/console/{name}" for name in ASSETS if name != "index.html"]
    for path in paths:
        answer = await api.get(None, path)  # no key: the console holds no secret
        assert answer.status_code == 200, path
        assert directives(answer.headers["content-security-policy"]) >= REQUIRED_CSP, path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["content-type"] == ASSETS[path.rpartition("/")[2] or
                                                        "index.html"], path
    page = (await api.get(None, "/")).text
    assert page.startswith("<!doctype html>")


async def test_only_shipped_assets_are_served(api: Api) -> None:
    for path in ("/console/index.html", "/console/nope.js", "/console/..%2f__init__.py",
                 "/console/../__init__.py", "/console/", "/console.css", "/v1/console/app.js"):
        answer = await api.get(None, path)
        assert answer.status_code in (401, 404), path
        assert "content-security-policy" not in answer.headers or answer.status_code == 404
    shipped = {item.name for item in STATIC.iterdir() if item.is_file()}
    assert shipped == set(ASSETS)  # nothing shipped unreachable, nothing served missing


def test_the_page_loads_only_its_own_assets_and_has_nothing_inline() -> None:
    page = Page()
    page.feed(STATIC.joinpath("index.html").read_text())
    assert page.inline == []
    assert page.loads and all(re.fullmatch(r"/console/[a-z]+\.(js|css|svg)", src)
                              for src in page.loads), page.loads


def test_scripts_import_only_shipped_modules_and_parse_no_markup() -> None:
    for name in ASSETS:
        if not name.endswith(".js"):
            continue
        source = STATIC.joinpath(name).read_text()
        assert not SINKS.search(source), f"{name}: {SINKS.search(source)}"
        imported = re.findall(r"""\bfrom\s+["']([^"']+)["']""", source)
        assert all(m.startswith("./") and m[2:] in ASSETS for m in imported), (name, imported)
        assert "localStorage" not in source and "document.cookie" not in source, name
    styles = STATIC.joinpath("console.css").read_text()
    assert "@import" not in styles and "url(" not in styles
