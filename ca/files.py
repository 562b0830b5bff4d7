"""Files that hold secrets: written atomically with exact modes, checked before use.

Everything pocketmesh writes that holds a private key or a token is 0600 in a 0700
directory, written to a temporary file in the same directory, fsynced, then renamed
over the old one (and the directory fsynced), so a crash or a full disk leaves the
previous version readable, never a half-written one.

Reading a private file checks its mode first, as ssh does for its keys:

* writable by group or others: refused (`CaDirError`, with the ``chmod`` that fixes it),
  since whoever can write it can swap in their own key;
* readable by group or others: used, with a warning (mounted secrets are often 0644,
  e.g. a Kubernetes Secret volume without ``defaultMode: 0400``).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ca.errors import CaDirError, CaDirExists

__all__ = [
    "CERT_MODE",
    "DIR_MODE",
    "KEY_MODE",
    "check_private_dir",
    "check_private_file",
    "io_errors",
    "make_private_dir",
    "read_private",
    "write_atomic",
    "write_new",
]

log = logging.getLogger("pocketmesh.ca")

DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


@contextmanager
def io_errors(path: Path, action: str) -> Iterator[None]:
    """Turn an OSError into a `CaDirError` that names the file and the action."""
    try:
        yield
    except OSError as exc:
        raise CaDirError(f"cannot {action} {path}: {exc.strerror or exc}") from exc


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; some filesystems
    # refuse to open a directory for this, which is harmless.
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively (never overwrite) with exactly `mode`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CaDirExists(f"{path} already exists; refusing to overwrite a CA") from None
    except OSError as exc:
        raise CaDirError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with io_errors(path, "write"), os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(path)  # never leave a half-written key behind
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; the file has exactly `mode` from the start.

    `durable` fsyncs the data and the directory, so the new version survives a power
    cut too; without it a crash still leaves the old version or the new one, whole.
    """
    with io_errors(path, "write"):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
    if durable:
        _fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) and make it 0700."""
    with io_errors(path, "create"):
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)


def _who(mode: int, group_bit: int, other_bit: int) -> str:
    return " and ".join(
        who for who, bit in (("its group", group_bit), ("other users", other_bit)) if mode & bit
    )


def check_private_file(path: Path, what: str = "private key") -> None:
    """Refuse a secret file others may write; warn when others may read it.

    Raises:
        CaDirError: not a regular file, or writable by group or others.
    """
    with io_errors(path, "read"):
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CaDirError(f"{path}: {what} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise CaDirError(
            f"{path}: {what} is writable by {_who(mode, 0o020, 0o002)} (mode {mode:04o}), "
            f"who could replace it; refusing to use it. Fix: chmod 600 {path}"
        )
    if mode & 0o044:
        log.warning(
            "%s: %s is readable by %s (mode %04o); anyone who can read it can act as this "
            "mesh's CA or its workloads. Fix: chmod 600 %s",
            path, what, _who(mode, 0o040, 0o004), mode, path,
        )  # fmt: skip


def check_private_dir(path: Path) -> None:
    """Refuse a directory of secrets others may write into; warn when others may enter it."""
    with io_errors(path, "read"):
        st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise CaDirError(
            f"{path}: the CA directory is writable by {_who(mode, 0o020, 0o002)} "
            f"(mode {mode:04o}), who could replace its keys; refusing to use it. "
            f"Fix: chmod 700 {path}"
        )
    if mode & 0o055:
        log.warning(
            "%s: the CA directory is open to %s (mode %04o). Fix: chmod 700 %s",
            path, _who(mode, 0o050, 0o005), mode, path,
        )  # fmt: skip


def read_private(path: Path, what: str = "private key") -> bytes:
    """The bytes of a secret file, after `check_private_file`."""
    check_private_file(path, what)
    with io_errors(path, "read"):
        return path.read_bytes()
