"""Email settings that would only break later are refused at start-up."""

from __future__ import annotations

import pytest

from backend.config import ConfigError, load_settings

BASE = {"DATABASE_URL": "postgresql+asyncpg://u@h/db", "JWT_SECRET": "s" * 40}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EMAIL_LEASE_SECONDS": "15"}, "EMAIL_LEASE_SECONDS must be more than twice"),
        ({"UNSUBSCRIBE_SECRET": "short"}, "UNSUBSCRIBE_SECRET must be at least 32"),
        ({"EMAIL_MAX_ATTEMPTS": "0"}, "EMAIL_MAX_ATTEMPTS must be at least 1, got 0"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT must be between 1 and 65535"),
    ],
)
def test_bad_email_settings_stop_the_server_with_one_line(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE, **env})


def test_email_settings_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            **BASE, "SMTP_HOST": "mail.example", "SMTP_PORT": "587", "SMTP_STARTTLS": "true",
            "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p", "EMAIL_FROM": "App <app@example.com>",
            "UNSUBSCRIBE_SECRET": "u" * 32, "APP_URL": "https://app.example",
        }
    )  # fmt: skip
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == (
        "mail.example", 587, True,
    )  # fmt: skip
    assert settings.smtp_password is not None and "p" not in repr(settings.smtp_password)
    assert settings.unsubscribe_secret is not None
