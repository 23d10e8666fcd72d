"""The remotes tree as SshRunner copies it to hosts: a content hash, a tar archive carrying
a manifest, and the fixed scripts that read a host's hash and unpack the archive there.

On the host, HASH_FILE holds the digest of the last complete copy (it is removed before
unpacking) and MANIFEST_FILE lists the files that copy brought, so that files removed
from the tree are removed from the host too.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path

HASH_FILE = ".nubo-remotes-hash"
MANIFEST_FILE = ".nubo-remotes-manifest"

_SKIP = {"__pycache__", HASH_FILE, MANIFEST_FILE}

# Remote side, run as `sh -c SCRIPT nubo REMOTE_DIR [DIGEST]`.
READ_HASH_SCRIPT = f'cat -- "$1/{HASH_FILE}" 2>/dev/null; exit 0'
SYNC_SCRIPT = f"""set -eu
mkdir -p -- "$1"
cd -- "$1"
rm -f -- {HASH_FILE}
tar -x -o -f -
if [ -f {MANIFEST_FILE} ]; then
  grep -F -x -v -f {MANIFEST_FILE}.new {MANIFEST_FILE} | while IFS= read -r f; do
    rm -f -- "$f" || true
    p=$(dirname -- "$f")
    while [ "$p" != . ] && rmdir -- "$p" 2>/dev/null; do p=$(dirname -- "$p"); done
  done
fi
mv -f -- {MANIFEST_FILE}.new {MANIFEST_FILE}
printf '%s\\n' "$2" > {HASH_FILE}
"""


class RemotesTree:
    """The remotes directory as synced to hosts: content hash and tar archive, cached."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._cached: tuple[str, bytes] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    async def snapshot(self) -> tuple[str, bytes]:
        """(sha256 hex digest, tar archive) of the tree."""
        cached = self._cached
        if cached is None:
            cached = await asyncio.to_thread(self._build)
        return cached

    def _build(self) -> tuple[str, bytes]:
        with self._lock:
            if self._cached is None:
                self._cached = self._scan()
            return self._cached

    def _scan(self) -> tuple[str, bytes]:
        digest = hashlib.sha256()
        buf = io.BytesIO()
        names: list[str] = []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(self._walk(self.root), key=lambda p: p.relative_to(self.root).parts):
                rel = path.relative_to(self.root).as_posix()
                info = tarfile.TarInfo(rel)
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                names.append(rel)
                if stat.S_ISLNK(mode):
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                    digest.update(f"{rel}\0l\0{info.linkname}\0".encode())
                    tar.addfile(info)
                    continue
                data = path.read_bytes()
                executable = bool(mode & stat.S_IXUSR)
                info.mode, info.size = (0o755 if executable else 0o644), len(data)
                digest.update(f"{rel}\0{'x' if executable else '-'}\0{len(data)}\0".encode())
                digest.update(data)
                tar.addfile(info, io.BytesIO(data))
            manifest = "".join(name + "\n" for name in names).encode()
            info = tarfile.TarInfo(MANIFEST_FILE + ".new")
            info.mode, info.size = 0o644, len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
        return digest.hexdigest(), buf.getvalue()

    def _walk(self, top: Path) -> Iterable[Path]:
        for entry in top.iterdir():
            if entry.name in _SKIP or entry.name.endswith(".pyc"):
                continue
            yield entry
            if entry.is_dir() and not entry.is_symlink():
                yield from self._walk(entry)
