"""From an event to a notification: which type, title, body and link, and who receives it.

A mapping is chosen by the event's key (its CloudEvent `type`; for a payload Dapr wrapped,
`data.event_type` or else the topic). Templates are `str.format` syntax over the event's data,
limited to plain names (`{title}`): no attribute or index access, no format specs (a width of a
billion would be a memory bomb), so an event's data can fill in text but never reach anything
else. A name missing from the data is a clear reason to drop the event, never an error.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from ..codec import OrjsonModule
from ..schemas import TypeName

_FORMATTER = string.Formatter()
TITLE_MAX = 255
BODY_MAX = 10_000
DEFAULT_RECIPIENTS = ("user_id", "user_ids", "assignee_ids")


class MissingField(ValueError):
    """A template names a data field the event does not have (or has as null)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _check_template(text: str) -> str:
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise ValueError(f"not a template: {exc}") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"{{{name}}}: a field must be a plain name of the event's data")
        if spec or conversion:
            raise ValueError(f"{{{name}}}: format specs and conversions are not allowed")
    return text


Template = Annotated[
    str, StringConstraints(max_length=2048, pattern="^[^\x00]*$"), AfterValidator(_check_template)
]
FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
MappingKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return OrjsonModule.dumps(value)


def render(template: str, data: Mapping[str, Any], *, url: bool = False) -> str:
    """Fill a checked template from `data`; MissingField when a name is absent or null. In URL
    templates each value is percent-encoded, so data cannot change the path or add a query."""
    out: list[str] = []
    for literal, name, _spec, _conversion in _FORMATTER.parse(template):
        out.append(literal)
        if name is None:
            continue
        value = data.get(name)
        if value is None:
            raise MissingField(name)
        text = _text(value)
        out.append(quote(text, safe="") if url else text)
    return "".join(out)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class EventMapping(BaseModel):
    """How one kind of event becomes a notification."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: TypeName
    title: Annotated[Template, StringConstraints(min_length=1)]
    body: Template = ""
    action_url: Template | None = None
    icon: Template | None = None
    # the audit trail's `subject` when the event has none (e.g. "task-{task_id}")
    subject: Template | None = None
    # data fields naming the recipients, in order: the first present one is used
    recipients: tuple[FieldName, ...] = Field(default=DEFAULT_RECIPIENTS, min_length=1)

    def title_for(self, data: Mapping[str, Any]) -> str:
        return _clip(render(self.title, data), TITLE_MAX)

    def body_for(self, data: Mapping[str, Any]) -> str:
        return _clip(render(self.body, data), BODY_MAX)

    def optional(self, template: str | None, data: Mapping[str, Any], *, url: bool) -> str | None:
        """A link or subject: left out when the data lacks what it needs."""
        if template is None:
            return None
        try:
            return render(template, data, url=url)
        except MissingField:
            return None

    def recipients_for(self, data: Mapping[str, Any]) -> list[Any]:
        """The first recipients field the data has; [] when none."""
        for name in self.recipients:
            value = data.get(name)
            if value is None or value == []:
                continue
            return list(value) if isinstance(value, list) else [value]
        return []


def _task(kind: str, title: str, body: str = "", link: bool = True) -> EventMapping:
    return EventMapping(
        type=kind,
        title=title,
        body=body,
        action_url="/tasks/{task_id}" if link else None,
        subject="task-{task_id}",
    )


BUILTIN: dict[str, EventMapping] = {
    "taskflow.tasks.created": _task("task.created", "New task: {title}"),
    "taskflow.tasks.updated": _task("task.updated", "Task updated: {title}"),
    "taskflow.tasks.completed": _task("task.completed", "Task completed: {title}"),
    "taskflow.tasks.deleted": _task("task.deleted", "Task deleted: {title}", link=False),
    "taskflow.tasks.reminder-triggered": _task(
        "task.reminder", "Reminder: {title} is due {due_date}"
    ),
}
DEFAULT_TOPICS = tuple(BUILTIN)


class MappingError(ValueError):
    """The mappings file is unreadable or invalid; the message is one line."""


class _MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mappings: dict[MappingKey, EventMapping]


def load_mappings(path: str | None) -> dict[str, EventMapping]:
    """The built-in mappings, with those of the file at `path` (JSON, or YAML for .yaml/.yml)
    added or replacing them by key."""
    if not path:
        return dict(BUILTIN)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path} cannot be read: {exc}") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        one_line = " ".join(str(exc).split())
        raise MappingError(f"{path} is not valid {_kind(file)}: {one_line}") from None
    try:
        parsed = _MappingFile.model_validate(document)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MappingError(f"{path}: {where}: {first['msg']}{more}") from None
    return {**BUILTIN, **parsed.mappings}


def _kind(file: Path) -> str:
    return "YAML" if file.suffix.lower() in (".yaml", ".yml") else "JSON"
