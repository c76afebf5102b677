"""Atomic file output: a reader never sees a half-written file, an interrupted run never loses the old one; and the
check that an output folder can be written, made before a run starts."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from uni3d.errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_folder(path: str | Path, *, what: str = "--out") -> Path:
    """Check, before any work starts, that the folder ``path`` can be made and written in; a path under a file, an
    existing file, or a read-only place is a one-line error naming ``what``. Folders made for the check are removed
    again, so a run refused later leaves nothing behind."""
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise UsageError(f"{what} {path} is a file, not a folder; name a folder") from None
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot write there ({err.strerror or err})") from None
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path
