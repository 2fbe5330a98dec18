"""The project-local Redis: nothing answers on the configured port, so the stack starts its own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_celery_without_redis_gets_a_project_local_one_and_down_stops_it():
    from scripts.stack import services
    from scripts.stack.settings import Stack

    assert shutil.which("redis-server"), "the test machine has redis-server (packages.txt / the CI image)"
    home = Path(tempfile.mkdtemp(prefix="nightshift-redis-"))
    url = f"redis://127.0.0.1:{free_port()}/0"
    stack = Stack(home=home, executor="CeleryExecutor", redis_url=url, db_prefix="nsredis")
    try:
        assert not services.redis_answers(url)
        services.ensure_redis(stack)
        assert services.redis_answers(url)
        services.ensure_redis(stack)  # a second `up` uses it
        assert (home / "run" / "redis.pid").exists()
    finally:
        services.down(stack)
        shutil.rmtree(home, ignore_errors=True)
    assert not services.redis_answers(url)
