"""Notification templates: stored per type, rendered at publish time, the result stored.

Rendering uses the email layouts' sandbox (backend.email.render); the rendered title, body and
action_url go into the notification row, and the email parts into its queued email, so editing a
template never changes what a user got.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..admin_schemas import TemplateIn
from ..config import Settings
from ..email.render import TemplateRefused, check_source, render_source
from ..errors import Conflict, Invalid, NotFound
from ..models import NotificationTemplate, utcnow
from ..schemas import NotificationCreate, RenderedEmail, isoformat

FIELDS = ("title", "body", "action_url", "email_subject", "email_text", "email_html")
# Rendered as HTML (autoescaped); the others are plain text.
HTML_FIELDS = frozenset({"email_html"})


def _invalid(loc: list[str | int], message: str, kind: str = "template") -> Invalid:
    return Invalid(message, details=[{"loc": loc, "msg": message, "type": kind}])


def template_json(row: NotificationTemplate) -> dict[str, Any]:
    return {
        "name": row.name,
        **{name: getattr(row, name) for name in FIELDS},
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


class Templates:
    """Store, read, delete templates; render one into a publish request."""

    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_templates = settings.templates_max
        self._max_chars = settings.template_max_chars
        self._max_output = settings.template_max_output_chars

    def _check(self, template: TemplateIn) -> None:
        for name in FIELDS:
            source = getattr(template, name)
            if source is None:
                continue
            if len(source) > self._max_chars:
                message = f"{name} is {len(source)} characters; the limit is {self._max_chars}"
                raise _invalid([name], message, "too_long")
            try:
                check_source(source, html=name in HTML_FIELDS)
            except TemplateRefused as exc:
                raise _invalid([name], f"{name}: {exc}") from None

    async def put(self, *, name: str, template: TemplateIn) -> dict[str, Any]:
        """Create or replace; a notification already sent keeps what it was rendered to."""
        self._check(template)
        async with self._sessionmaker.begin() as session:
            row = await session.get(NotificationTemplate, name, with_for_update=True)
            if row is None:
                count = await session.scalar(select(func.count()).select_from(NotificationTemplate))
                if int(count or 0) >= self._max_templates:
                    raise Conflict(
                        f"{self._max_templates} templates exist (TEMPLATES_MAX); delete one first",
                        details={"limit": self._max_templates},
                    )
                row = NotificationTemplate(name=name, created_at=utcnow())
                session.add(row)
            for field in FIELDS:
                setattr(row, field, getattr(template, field))
            row.updated_at = utcnow()
            await session.flush()
        return template_json(row)

    async def get(self, *, name: str) -> dict[str, Any]:
        async with self._sessionmaker() as session:
            row = await session.get(NotificationTemplate, name)
        if row is None:
            raise NotFound(f"template {name!r} not found")
        return template_json(row)

    async def delete(self, *, name: str) -> None:
        async with self._sessionmaker.begin() as session:
            result = await session.execute(
                delete(NotificationTemplate)
                .where(NotificationTemplate.name == name)
                .returning(NotificationTemplate.name)
            )
            if result.scalar_one_or_none() is None:
                raise NotFound(f"template {name!r} not found")

    async def apply(self, request: NotificationCreate) -> NotificationCreate:
        """The request with its template rendered into title, body and action_url, and its email
        parts (subject, text, html) carried for the email queue (422 for a
        missing variable, naming it; for output past TEMPLATE_MAX_OUTPUT_CHARS; or for a
        rendered title or URL that breaks the request's own rules)."""
        assert request.template is not None
        async with self._sessionmaker() as session:
            row = await session.get(NotificationTemplate, request.template)
        if row is None:
            raise NotFound(f"unknown template {request.template!r}")
        variables = request.variables or {}
        rendered: dict[str, str] = {}
        for name in FIELDS:
            source = getattr(row, name)
            if source is None:
                continue
            try:
                rendered[name] = render_source(
                    source, variables, html=name in HTML_FIELDS, max_chars=self._max_output
                )
            except TemplateRefused as exc:
                raise _invalid(["variables"], f"template {row.name!r}, {name}: {exc}") from None
        fields = request.model_dump(exclude={"template", "variables"}, exclude_unset=True)
        fields["title"] = rendered["title"]
        fields["body"] = rendered.get("body", "")
        if "action_url" not in fields and rendered.get("action_url"):
            fields["action_url"] = rendered["action_url"]
        email = RenderedEmail(
            subject=rendered.get("email_subject"),
            text=rendered.get("email_text"),
            html=rendered.get("email_html"),
        )
        try:
            created = NotificationCreate.model_validate(fields)
        except ValidationError as exc:
            details = [
                {"loc": list(e["loc"]), "msg": f"rendered: {e['msg']}", "type": e["type"]}
                for e in exc.errors()
            ]
            message = f"template {row.name!r} rendered to an invalid notification"
            raise Invalid(message, details=details) from None
        # The email parts ride with the request to the email queue (emails.queue_immediate).
        return created.with_email(email if email.as_payload() else None)
