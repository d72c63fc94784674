import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(FMNIST):
        return
    skip = pytest.mark.skip(reason="Debian's dataset-fashion-mnist is missing (the README's test command installs it)")
    for item in items:
        if "fmnist" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL when given (CI may point it at the machine's Redis), else an embedded redis-server behind a
    password, as `mocolab up` runs it (every client the tests start must carry it)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    from server.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), password=secrets.token_urlsafe(16)) as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, and PostgreSQL when TEST_DATABASE_URL points at one (else that case skips)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mocolab.db'}"
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set")
    return url
