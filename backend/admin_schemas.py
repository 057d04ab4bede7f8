"""Wire models of the admin resources for publishers: API keys and templates."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from .schemas import NO_NUL, Strict, TopicName

KeyName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True, pattern=NO_NUL)
]
UserPrefix = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]


# What the service checks, said in the schema: at least one permission.
_AT_LEAST_ONE: list[JsonValue] = [
    {"required": ["any_user"], "properties": {"any_user": {"const": True}}},
    {"required": ["admin"], "properties": {"admin": {"const": True}}},
    {"required": ["topics"], "properties": {"topics": {"minItems": 1}}},
    {"required": ["user_prefixes"], "properties": {"user_prefixes": {"minItems": 1}}},
]


class KeyPermissions(Strict):
    """What a key may do; at least one. Topics and prefixes: at most API_KEY_MAX_RULES each."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": _AT_LEAST_ONE})

    any_user: bool = Field(default=False, description="publish to any user")
    user_prefixes: list[UserPrefix] = Field(
        default_factory=list, max_length=1000, description="publish to users whose id starts so"
    )
    topics: list[TopicName] = Field(
        default_factory=list, max_length=1000, description="publish to these topics"
    )
    admin: bool = Field(default=False, description="the notifications:admin scope")


class ApiKeyCreate(Strict):
    name: KeyName
    permissions: KeyPermissions


class ApiKeyOut(BaseModel):
    id: int
    name: str
    hint: str = Field(description="the key's first characters, to recognise it")
    permissions: KeyPermissions
    created_by: str | None
    created_at: str
    last_used_at: str | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the key itself: shown this once, never stored")


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


TemplateSource = Annotated[str, StringConstraints(pattern=NO_NUL)]


class TemplateIn(Strict):
    """Jinja2 sources (sandboxed); each at most TEMPLATE_MAX_CHARS characters."""

    title: Annotated[str, StringConstraints(min_length=1, pattern=NO_NUL)]
    body: TemplateSource = ""
    action_url: TemplateSource | None = None
    email_subject: TemplateSource | None = None
    email_text: TemplateSource | None = None
    email_html: TemplateSource | None = None


class TemplateOut(TemplateIn):
    name: str
    created_at: str
    updated_at: str
