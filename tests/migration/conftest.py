"""Fixtures for the migration tool tests: a throwaway PostgreSQL 15 server (session),
a fresh database per test, and generated ChatMRPT-shaped SQLite files."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgserver import PgServer, pg_available  # noqa: E402

import chatmrpt_data  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    if not pg_available():
        pytest.skip("PostgreSQL 15 binaries not installed")
    with PgServer() as server:
        yield server


@pytest.fixture
def fresh_db(pg):
    """DSN of a new, empty database."""
    return pg.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("instance")
    chatmrpt_data.build_instance(str(d))
    return str(d)


def file_hashes(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="session")
def instance_hashes(instance_dir):
    """sha256 of every file of the instance directory before any test touched it."""
    return file_hashes(instance_dir)
