"""One Redis client per process for the queue and the GitOps lock, following the settings."""

from nexo_portal.lib import queues


def test_the_queue_and_the_lock_share_one_client_and_its_connection(redis_connection):
    first, second = queues.get_queue(), queues.get_queue()
    assert first.connection is second.connection is queues.redis_connection()
    assert first.connection.client_id() == second.connection.client_id(), "one TCP connection, reused"


def test_a_changed_queue_setting_gets_a_client_of_its_own(settings, redis_connection):
    before = queues.redis_connection()
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    after = queues.redis_connection()
    assert after is not before
    assert after.connection_pool.connection_kwargs["port"] == 1
