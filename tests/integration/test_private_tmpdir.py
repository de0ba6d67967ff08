"""The suite's helpers that run something as another user work from a private place.

A per-user TMPDIR (pam_tmpdir) or a checkout under a 0700 directory (a
`mktemp -d` clone) is private: PostgreSQL, which runs as its own user, could
neither reach its data directory nor return to its working directory there,
and nine tests failed with "Permission denied". The helpers make their own
shared directory and run the server from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar_harness.localpg import LocalPostgres, PostgresNotFound
from sidecar_harness.shareddir import shared_tempdir, traversable
from tests.conftest import missing

pytestmark = pytest.mark.integration


@pytest.fixture
def private_place(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TMPDIR and the working directory both inside a 0700 directory."""
    root = Path(tempfile.mkdtemp(prefix="es-private-"))  # 0700
    (root / "tmp").mkdir()
    (root / "cwd").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root / "tmp"))
    monkeypatch.setenv("TMPDIR", str(root / "tmp"))
    monkeypatch.chdir(root / "cwd")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_shared_tempdir_leaves_a_private_tmpdir(private_place: Path) -> None:
    assert not traversable(private_place / "tmp")
    d = shared_tempdir("es-shared-")
    try:
        assert traversable(d)
        assert private_place not in d.parents
    finally:
        d.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_postgres_starts_from_a_private_tmpdir_and_working_directory(private_place: Path) -> None:
    try:
        pg = LocalPostgres().start(timeout=60)  # returns once it accepts sessions
    except PostgresNotFound as exc:
        missing(str(exc))
        raise
    try:
        assert pg.proc is not None and pg.proc.poll() is None
    finally:
        pg.stop()
