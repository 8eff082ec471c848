"""Where model archives live: a store addressed by URI, so the catalog never holds a path.

``builtin:<relative path>`` names an archive shipped in the installed ``models`` package
(read-only); ``store:<key>`` one in the model store, a directory shared by every replica
(``TOLLGATE_MODEL_STORE_DIR``; a network file system or a volume in a deployment). The
:class:`ModelStore` protocol is what an object store (S3, GCS) would implement: put a
file under a key, give a local path to load from, delete a key.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Protocol

BUILTIN = "builtin:"
STORE = "store:"


class ArchiveMissing(Exception):
    """The archive a catalog row names is not in its store."""


class ModelStore(Protocol):
    def put(self, key: str, source: Path) -> str:
        """Copy ``source`` in under ``key``; returns its URI."""

    def local_path(self, uri: str) -> Path:
        """A local file to load the archive from."""

    def delete(self, uri: str) -> None:
        """Remove an archive (nothing if absent)."""


def _safe_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise ValueError(f"not a store key: {key!r}")
    return path


class DirectoryStore:
    """The default store: files under one directory. A put writes a temporary file next to
    the target and renames it, so a reader never sees half an archive."""

    def __init__(self, root: Path, builtin_root: Path) -> None:
        self.root = root
        self.builtin_root = builtin_root

    def put(self, key: str, source: Path) -> str:
        target = self.root / _safe_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        return STORE + key

    def local_path(self, uri: str) -> Path:
        if uri.startswith(BUILTIN):
            path = self.builtin_root / _safe_key(uri.removeprefix(BUILTIN))
        elif uri.startswith(STORE):
            path = self.root / _safe_key(uri.removeprefix(STORE))
        else:
            raise ArchiveMissing(f"unknown archive location {uri!r}")
        if not path.is_file():
            raise ArchiveMissing(f"archive {uri} is missing from the model store")
        return path

    def delete(self, uri: str) -> None:
        if uri.startswith(STORE):
            (self.root / _safe_key(uri.removeprefix(STORE))).unlink(missing_ok=True)
