"""The ``SENT`` record belongs to the app that installed it: two apps in one
process, one broker vhost, one Redis; only the installing app's publishes are
recorded. No worker runs, so every task stays queued."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from routing_demo.celery import client_app
from routing_demo.polling import wait_until
from routing_demo.sent_state import SENT, SENT_ID_PREFIX, install, sent_record, writer_for
from routing_demo.tasks import add

pytestmark = pytest.mark.integration


@pytest.fixture
def apps(vhost_factory: Callable[[str], str], redis_url: str) -> Iterator[tuple[Celery, Celery]]:
    url = vhost_factory("sent-state")
    recording = client_app(url, redis_url, name="recording")
    other = client_app(url, redis_url, name="other")
    install(recording)
    yield recording, other
    for app in (recording, other):
        app.close()


def test_when_two_apps_publish_then_only_the_installing_apps_tasks_read_sent(
    apps: tuple[Celery, Celery],
) -> None:
    recording, other = apps
    own = recording.send_task(add.name, (1, 2))
    foreign = other.send_task(add.name, (3, 4))
    # The records are written by a thread of their own, soon after the send.
    assert writer_for(recording.backend).flush()
    try:
        meta = recording.backend.get_task_meta(own.id)
        assert (meta["status"], meta["name"], meta["routing_key"]) == (SENT, add.name, "add")
        assert recording.backend.get_task_meta(foreign.id)["status"] == "PENDING"
    finally:
        recording.backend.forget(own.id)
        recording.backend.forget(foreign.id)


def test_when_the_app_already_published_then_installing_says_it_is_too_late(
    apps: tuple[Celery, Celery],
) -> None:
    _, other = apps
    sent = other.send_task(add.name, (5, 6))
    with pytest.raises(RuntimeError, match="before 'other' publishes anything"):
        install(other)
    other.backend.forget(sent.id)


def test_when_the_result_expired_then_the_record_of_the_send_remains(
    apps: tuple[Celery, Celery],
) -> None:
    recording, _ = apps
    recording.conf.result_expires = 1
    sent = recording.send_task(add.name, (7, 8))
    assert writer_for(recording.backend).flush()
    try:
        assert recording.backend.get_task_meta(sent.id)["status"] == SENT
        # Redis drops the SENT record after result_expires: PENDING again.
        wait_until(
            lambda: recording.backend.get_task_meta(sent.id)["status"] == "PENDING",
            timeout=10,
            message="the SENT record did not expire",
        )
        assert sent_record(recording, sent.id) is not None
        assert sent_record(recording, str(uuid.uuid4())) is None
    finally:
        recording.backend.client.delete(SENT_ID_PREFIX + sent.id)
