"""The broker password from a file (a Docker or Kubernetes secret) instead of
the URL: what the settings module makes of it, and the mistakes it refuses.
The end-to-end use (workers and commands logging in with it) is in
``test_least_privilege.py``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from celery import Celery

from routing_demo.security import BROKER_PASSWORD_FILE, broker_password_from_file

URL = "pyamqp://routing_demo@127.0.0.1:5672/routing_demo"


def test_when_no_file_is_named_then_there_is_no_password_to_add() -> None:
    assert broker_password_from_file(URL, {}) is None
    assert broker_password_from_file(URL, {BROKER_PASSWORD_FILE: ""}) is None


def test_when_the_file_ends_in_a_newline_then_the_password_does_not(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret with spaces \n")
    assert broker_password_from_file(URL, {BROKER_PASSWORD_FILE: str(secret)}) == (
        "s3cret with spaces "
    )


@pytest.mark.parametrize(
    ("url", "content", "error"),
    [
        (
            "pyamqp://routing_demo:in-the-url@127.0.0.1:5672/routing_demo",
            "from-the-file",
            "carries a password too",
        ),
        (URL, "\n", "the file is empty"),
        (URL, None, "No such file or directory"),
    ],
    ids=["url-has-one-too", "empty", "missing"],
)
def test_when_the_file_cannot_be_the_password_then_loading_says_why(
    tmp_path: Path, url: str, content: str | None, error: str
) -> None:
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValueError, match=error) as raised:
        broker_password_from_file(url, {BROKER_PASSWORD_FILE: str(secret)})
    assert "in-the-url" not in str(raised.value)
    assert "from-the-file" not in str(raised.value)


def test_when_the_settings_load_with_a_file_then_kombu_logs_in_with_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    monkeypatch.setenv(BROKER_PASSWORD_FILE, str(secret))
    import routing_demo.conf.celeryconfig

    try:
        settings = importlib.reload(routing_demo.conf.celeryconfig)
        assert settings.broker_password == "from-the-file"
        app = Celery("password-file", set_as_current=False)
        app.config_from_object(settings)
        connection = app.connection_for_write()
        assert (connection.userid, connection.password) == ("routing_demo", "from-the-file")
        assert connection.virtual_host == "routing_demo"
        # kombu's own URL rendering masks it, as for a password in the URL.
        assert "from-the-file" not in connection.as_uri()
    finally:
        monkeypatch.undo()
        importlib.reload(routing_demo.conf.celeryconfig)
