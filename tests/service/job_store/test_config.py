"""The job store's settings: each backend takes only its own fields, and paths are absolute."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from gen3d.service.job_store import JobStoreConfig, default_store_path
from gen3d.service.job_store.config import BackendConfig


def test_the_default_is_sqlite_under_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert JobStoreConfig().job_store == BackendConfig(backend="sqlite")
    assert BackendConfig().folder() == default_store_path() == tmp_path / "gen3d" / "jobs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_store_path() == Path.home() / ".cache" / "gen3d" / "jobs"
    assert BackendConfig(path="~/jobs").folder() == Path.home() / "jobs"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "redis"}, "needs url"),
        ({"backend": "sqlite", "url": "redis://h:6379/0"}, "url is for backend redis"),
        ({"backend": "redis", "url": "redis://h:6379/0", "path": "/srv/jobs"}, "path is for backend sqlite"),
        ({"backend": "sqlite", "path": "jobs"}, "must be absolute"),
        ({"backend": "postgres"}, "'sqlite', 'redis' or 'memory'"),
    ],
)
def test_mistakes_are_refused_with_the_right_form(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobStoreConfig.model_validate({"job_store": fields})
