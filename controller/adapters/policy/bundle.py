"""Policy bundles on disk: manifest, schema, Cedar policies; digest pinned into decisions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cedarpy
import yaml

from controller.errors import PolicyBundleError, StoreError

MANIFEST = "manifest.yaml"
SCHEMA = "schema.cedarschema"
POLICIES = "policies"
_archiving = threading.Lock()  # one archiver at a time in this process; rename covers others


@dataclass(frozen=True)
class PolicyInfo:
    """One policy of a bundle, by its ``@id``."""

    id: str
    file: str
    reason: str
    effect: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    description: str
    digest: str
    schema: str
    text: str
    policies: dict[str, PolicyInfo]  # keyed by cedar's positional id (policy0, …)
    path: Path


def bundle_digest(root: Path) -> str:
    """sha256 over every file of the bundle (relative path and content), in path order."""
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(root).as_posix()
        outer.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return f"sha256:{outer.hexdigest()}"


def load_bundle(root: Path) -> Bundle:
    """Load and validate a bundle; refuse it naming the file, policy and problem."""
    manifest = _manifest(root)
    schema_path = root / SCHEMA
    try:
        schema = schema_path.read_text()
    except OSError as exc:
        raise PolicyBundleError(f"{schema_path}: cannot read the bundle's schema: {exc}") from exc
    files = sorted((root / POLICIES).glob("*.cedar"))
    if not files:
        raise PolicyBundleError(f"{root / POLICIES}: the bundle has no *.cedar policy file")
    texts = []
    for path in files:
        text = path.read_text()
        _validate_file(path, text, schema)
        texts.append(text)
    combined = "\n".join(texts)
    policies = _policy_infos(files, texts)
    return Bundle(
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        description=str(manifest.get("description", "")).strip(),
        digest=bundle_digest(root),
        schema=schema,
        text=combined,
        policies=policies,
        path=root,
    )


def _manifest(root: Path) -> dict[str, object]:
    path = root / MANIFEST
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyBundleError(f"{path}: cannot read the bundle manifest: {exc}") from exc
    if not isinstance(manifest, dict) or not manifest.get("name") or not manifest.get("version"):
        raise PolicyBundleError(f"{path}: the manifest needs a name and a version")
    return manifest


def _validate_file(path: Path, text: str, schema: str) -> None:
    try:
        cedarpy.policies_to_json_str(text)
        result = cedarpy.validate_policies(text, schema)
    except (ValueError, RuntimeError) as exc:
        raise PolicyBundleError(f"{path}: does not parse: {exc}") from exc
    if not result.validation_passed:
        ids = _ids(text)
        problems = "; ".join(
            f"policy {ids.get(err.policy_id, err.policy_id)!r}: {err.error}"
            for err in result.errors
        )
        raise PolicyBundleError(f"{path}: fails schema validation: {problems}")


def _ids(text: str) -> dict[str, str]:
    parsed = json.loads(cedarpy.policies_to_json_str(text))
    return {
        key: policy.get("annotations", {}).get("id", key)
        for key, policy in parsed.get("staticPolicies", {}).items()
    }


def _policy_infos(files: list[Path], texts: list[str]) -> dict[str, PolicyInfo]:
    infos: dict[str, PolicyInfo] = {}
    seen: dict[str, Path] = {}
    for path, text in zip(files, texts, strict=True):
        parsed = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
        for key in sorted(parsed, key=lambda k: int(k.removeprefix("policy"))):
            annotations = parsed[key].get("annotations", {})
            policy_id = annotations.get("id")
            if not policy_id:
                raise PolicyBundleError(f"{path}: policy {key} has no @id(\"...\") annotation")
            if policy_id in seen:
                raise PolicyBundleError(
                    f"{path}: policy id {policy_id!r} is also used in {seen[policy_id]}"
                )
            seen[policy_id] = path
            infos[f"policy{len(infos)}"] = PolicyInfo(
                id=policy_id,
                file=path.name,
                reason=annotations.get("reason", ""),
                effect=parsed[key]["effect"],
                annotations=dict(annotations),
            )
    return infos


def archive_bundle(bundle: Bundle, archive: Path) -> Path:
    """Keep a copy of a loaded bundle under its digest, so any receipt's citation resolves.

    Safe to call at once from many threads and processes: each copy is staged in a directory
    of its own and renamed into place; whoever renames second finds the same content (the
    name is its digest) already there and keeps it.
    """
    target = archive / bundle.digest.removeprefix("sha256:")
    with _archiving:
        if target.is_dir():
            return target
        try:
            archive.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                            dir=archive))
        except OSError as exc:
            raise StoreError(f"cannot archive policy bundle {bundle.digest} in "
                             f"{archive}: {exc}") from exc
        try:
            _stage(bundle, staging / "copy")
            os.rename(staging / "copy", target)
        except OSError as exc:
            if not target.is_dir():  # not merely another archiver's rename winning the race
                raise StoreError(f"cannot archive policy bundle {bundle.digest} in "
                                 f"{archive}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _stage(bundle: Bundle, staging: Path) -> None:
    shutil.copytree(bundle.path, staging, ignore=shutil.ignore_patterns("__pycache__"))
    if bundle_digest(staging) != bundle.digest:
        raise PolicyBundleError(f"{bundle.path} changed while it was being archived; retry")

