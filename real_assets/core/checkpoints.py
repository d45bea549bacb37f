"""Content-addressed checkpoint folders: `<root>/<asset>/<partition>/<data_version>/`."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from real_assets.core.hashing import digest_directory, digest_manifest

UNPARTITIONED = "_"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    data_version: str
    manifest: dict[str, str]
    """sha256 of every file, by path relative to the checkpoint folder."""


def staging_dir(root: Path, asset: str, partition: str | None) -> Path:
    """A fresh folder to train into; `finalize` moves it to its content-addressed place."""
    path = root / asset / (partition or UNPARTITIONED) / f"_staging-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def finalize(staging: Path) -> Checkpoint:
    """Hash every file of a trained checkpoint (trainer scratch removed) and move it to
    `<partition folder>/<data_version>/`. The same content always lands in the same folder."""
    shutil.rmtree(staging / "_trainer", ignore_errors=True)
    manifest = digest_directory(staging)
    version = digest_manifest(manifest)[:16]
    final = staging.parent / version
    if final.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(final)
    return Checkpoint(final, version, manifest)


def verify(path: Path, manifest: dict[str, str]) -> list[str]:
    """Files whose content no longer matches the manifest, plus files missing or added."""
    if not path.is_dir():
        return [f"{path}: checkpoint folder missing"]
    actual = digest_directory(path)
    problems = [f"{name}: missing" for name in sorted(set(manifest) - set(actual))]
    problems += [f"{name}: not in manifest" for name in sorted(set(actual) - set(manifest))]
    problems += [
        f"{name}: sha256 differs"
        for name in sorted(set(manifest) & set(actual))
        if manifest[name] != actual[name]
    ]
    return problems
