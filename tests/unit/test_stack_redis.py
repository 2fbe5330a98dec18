"""Fresh machines without Redis: CeleryExecutor uses the Redis that answers, starts a project-local one,
or stops at once naming what to install."""

from __future__ import annotations

import pytest

from scripts.stack.services import redis_plan
from scripts.stack.settings import StackError

pytestmark = pytest.mark.unit


def test_a_redis_that_answers_is_used():
    assert redis_plan("redis://127.0.0.1:6379/0", True, None) == "use"
    assert redis_plan("redis://broker.internal:6379/0", True, None) == "use"


def test_none_answering_on_this_machine_starts_a_project_local_one():
    assert redis_plan("redis://127.0.0.1:6390/2", False, "/usr/bin/redis-server") == "start"
    assert redis_plan("redis://localhost:6379/0", False, "/usr/bin/redis-server") == "start"


def test_without_redis_server_it_stops_at_once_naming_what_to_install():
    with pytest.raises(StackError, match=r"redis-server is not installed: install it \(e.g. apt-get install"):
        redis_plan("redis://127.0.0.1:6379/0", False, None)


def test_a_remote_broker_that_does_not_answer_is_not_replaced_by_a_local_one():
    with pytest.raises(StackError, match="none answers at redis://:\\*\\*\\*@broker.internal:6379/0"):
        redis_plan("redis://:pw@broker.internal:6379/0", False, "/usr/bin/redis-server")
