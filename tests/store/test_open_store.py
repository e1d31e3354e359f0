"""open_store picks the backend from the config (pure: nothing is opened here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.store import PostgresStore, SqliteStore, StoreError, open_store
from shared.config.coordinator import StoreConfig


def test_default_is_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    store = open_store(StoreConfig(), str(tmp_path))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "rollguard.db"
    assert store.timeout == 5.0


def test_sqlite_urls(tmp_path: Path) -> None:
    relative = open_store(StoreConfig(url="sqlite:///sub/rg.db", timeout=2.0), str(tmp_path))
    assert isinstance(relative, SqliteStore)
    assert relative.path == tmp_path / "sub" / "rg.db"
    assert relative.timeout == 2.0
    absolute = open_store(StoreConfig(url="sqlite:////srv/rg/rg.db"), str(tmp_path))
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == Path("/srv/rg/rg.db")
    with pytest.raises(StoreError, match="names no file"):
        open_store(StoreConfig(url="sqlite:///"), str(tmp_path))


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls(tmp_path: Path, scheme: str) -> None:
    store = open_store(
        StoreConfig(url=f"{scheme}://rg:pw@db.example:6543/rollguard", timeout=3.0), str(tmp_path)
    )
    assert isinstance(store, PostgresStore)
    assert store.timeout == 3.0
    assert repr(store) == "PostgresStore('db.example:6543/rollguard')"
