"""The run directory: private to its user, and whatever holds a secret 0600 in it.

`up` writes each sidecar's bootstrap there and the xDS client certificate and key it
names: a credential is what lets a proxy receive its workload's private key. So the
directory and every directory `up` makes for secrets are 0700 and owned by the user
running `up` (one found with other permissions is tightened; one owned by someone
else, or a symlink, is refused, since its owner could read or plant files), and files
are written 0600, atomically.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class UnsafeRunDir(Exception):
    pass


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700, or make an existing one so; refuse a
    directory that is a symlink or belongs to another user."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRunDir(f"{path} is not a directory but a link or a file; use another --run-dir")
    if info.st_uid != os.getuid():
        raise UnsafeRunDir(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}): its owner "
            "could read the proxies' credentials; remove it or use another --run-dir"
        )
    if info.st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, 0600 from the first byte, replacing it atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_private_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 (logs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd
