"""What preferences say about email: how often per type, and which digest period is due."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..schemas import Preferences

DIGEST_PERIODS = ("hourly", "daily", "weekly")


def global_frequency(preferences: Preferences) -> str:
    """How often email goes out for types without their own setting."""
    return preferences.digest_frequency if preferences.email_notifications else "never"


def email_frequency(preferences: Preferences, notification_type: str) -> str:
    """A per-type `email` setting wins over the global switch and frequency."""
    setting = preferences.type_settings.get(notification_type)
    if setting is not None and setting.email is not None:
        return setting.email
    return global_frequency(preferences)


def is_type_override(preferences: Preferences, notification_type: str) -> bool:
    setting = preferences.type_settings.get(notification_type)
    return setting is not None and setting.email is not None


def unread_delay_minutes(preferences: Preferences, notification_type: str) -> int | None:
    setting = preferences.type_settings.get(notification_type)
    return None if setting is None else setting.email_if_unread_after


def held_unless(preferences: Preferences, notification_type: str) -> str:
    """What drops an email held by email_if_unread_after: "read" (the default), or "delivered"
    (a device acknowledged it, or it was read)."""
    setting = preferences.type_settings.get(notification_type)
    return "read" if setting is None or setting.email_unless is None else setting.email_unless


def user_zone(name: str) -> ZoneInfo:
    """The user's timezone; UTC if it is unknown (it was validated when stored)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Window:
    """The last complete digest period before `now`, [start, end) in UTC, with a stable label."""

    period: str
    start: datetime
    end: datetime
    label: str


def _at(day: date, hour: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=zone)


def last_window(period: str, *, now: datetime, zone: ZoneInfo, digest_hour: int) -> Window:
    """Hourly: the last whole local hour. Daily: digest_hour yesterday to digest_hour today.

    Weekly: Monday digest_hour to the next Monday digest_hour. Local dates and hours, so a
    DST change makes a day 23 or 25 hours long rather than moving the send time.
    """
    local = now.astimezone(zone)
    if period == "hourly":
        end = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return Window(period, end - timedelta(hours=1), end, end.strftime("%Y-%m-%dT%H:%MZ"))
    if period == "daily":
        day, step = local.date(), timedelta(days=1)
    elif period == "weekly":
        day, step = local.date() - timedelta(days=local.weekday()), timedelta(days=7)
    else:
        raise ValueError(f"not a digest period: {period}")
    if _at(day, digest_hour, zone) > local:
        day -= step
    end_local, start_local = _at(day, digest_hour, zone), _at(day - step, digest_hour, zone)
    return Window(period, start_local.astimezone(UTC), end_local.astimezone(UTC), day.isoformat())


def digest_key(user_id: str, window: Window) -> str:
    """Unique per user and period in the database: the guard against sending twice."""
    user_hash = hashlib.sha256(user_id.encode()).hexdigest()[:40]
    return f"{window.period}:{window.label}:{user_hash}"
