"""Temporary directories that another user can reach.

PostgreSQL runs as its own user (initdb and postgres refuse root) and one
socket test connects as uid 65534: both fail with "Permission denied" when
the temporary root is private, as a per-user TMPDIR (pam_tmpdir, a 0700
`mktemp -d`) is. Such directories are made under the first candidate root
that every user can traverse, and are themselves 0755.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

# Where to fall back when TMPDIR is private: the system's shared roots.
_FALLBACK_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")


def traversable(path: Path) -> bool:
    """Whether any user can walk down to ``path`` (o+x on it and every ancestor)."""
    p = path.resolve()
    for d in (p, *p.parents):
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def shared_tempdir(prefix: str) -> Path:
    """A new 0755 directory that other users can reach; the caller removes it."""
    for root in (tempfile.gettempdir(), *_FALLBACK_ROOTS):
        if os.path.isdir(root) and traversable(Path(root)):
            d = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
            d.chmod(0o755)
            return d
    tried = ", ".join((tempfile.gettempdir(), *_FALLBACK_ROOTS))
    raise PermissionError(f"no temporary root that other users can traverse (tried {tried})")
