"""Per-user preferences: what reaches the inbox, what is emailed, and how often."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import one_of
from ..errors import Invalid
from ..models import NotificationPreference
from ..schemas import Preferences, PreferencesUpdate
from .users import ensure_users


def to_preferences(row: Any) -> Preferences:
    """From a NotificationPreference, a row of PREFERENCE_COLUMNS, or None (the defaults)."""
    if row is None:
        return Preferences()
    return Preferences.model_validate(
        {
            "email_notifications": row.email_notifications,
            "in_app_notifications": row.in_app_notifications,
            "digest_frequency": row.digest_frequency,
            "type_settings": row.type_settings or {},
            "timezone": row.timezone,
            "digest_hour": row.digest_hour,
        }
    )


def in_app_enabled(preferences: Preferences, notification_type: str) -> bool:
    """A per-type setting wins over the global switch."""
    setting = preferences.type_settings.get(notification_type)
    if setting is not None and setting.in_app is not None:
        return setting.in_app
    return preferences.in_app_notifications


PREFERENCE_COLUMNS = (
    NotificationPreference.user_id,
    NotificationPreference.email_notifications,
    NotificationPreference.in_app_notifications,
    NotificationPreference.digest_frequency,
    NotificationPreference.type_settings,
    NotificationPreference.timezone,
    NotificationPreference.digest_hour,
)
# Every publish batch runs this: built once per dialect, read as plain rows (no ORM objects).
_LOAD_MANY = {
    dialect: select(*PREFERENCE_COLUMNS).where(
        one_of(dialect, NotificationPreference.user_id, "ids")
    )
    for dialect in ("postgresql", "sqlite")
}


async def load_many(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, Preferences]:
    """Preferences of many users in one query; users without a row get the defaults."""
    ids = list(user_ids)
    statement = _LOAD_MANY[session.get_bind().dialect.name]
    rows = await session.execute(statement, {"ids": ids})
    found = {row.user_id: to_preferences(row) for row in rows}
    default = Preferences()  # shared by the users without a row: read it, never change it
    return {uid: found.get(uid) or default for uid in ids}


async def get_preferences(
    *, sessionmaker: async_sessionmaker[AsyncSession], user_id: str
) -> Preferences:
    async with sessionmaker() as session:
        row = await session.scalar(
            select(NotificationPreference).where(NotificationPreference.user_id == user_id)
        )
        return to_preferences(row)


async def update_preferences(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: str,
    update: PreferencesUpdate,
) -> Preferences:
    """Merge the given fields into the stored preferences (type_settings merge per type)."""
    if update.timezone is not None:
        try:
            ZoneInfo(update.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(
                "unknown timezone",
                details=[{"loc": ["timezone"], "msg": f"unknown timezone {update.timezone!r}"}],
            ) from None
    async with sessionmaker.begin() as session:
        await ensure_users(session, [user_id])
        row = await session.scalar(
            select(NotificationPreference)
            .where(NotificationPreference.user_id == user_id)
            .with_for_update()
        )
        current = to_preferences(row)
        changes = update.model_dump(exclude_none=True, exclude={"type_settings"})
        merged = current.model_copy(update=changes)
        if update.type_settings is not None:
            type_settings = dict(current.type_settings)
            type_settings.update(update.type_settings)
            merged = merged.model_copy(update={"type_settings": type_settings})
        values = merged.model_dump(mode="json")
        values["type_settings"] = {
            name: setting.model_dump(exclude_none=True)
            for name, setting in merged.type_settings.items()
        }
        if row is None:
            session.add(NotificationPreference(user_id=user_id, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)
    return Preferences.model_validate(values)
