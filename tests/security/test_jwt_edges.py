"""Tokens signed with the right key but absurd claims: a 401 or a connect_error, never a 500."""

from __future__ import annotations

import time
from typing import Any

import pytest
from jwt.api_jws import PyJWS

from backend.config import Secret, Settings
from backend.security import AuthError, TokenVerifier

from ..conftest import TEST_SECRET, RunningServer

HOUR = 3600


def signed(payload_json: str) -> str:
    """A validly signed HS256 token over this exact JSON text (so it may hold 1e400 or 10^400)."""
    return PyJWS().encode(payload_json.encode(), TEST_SECRET, algorithm="HS256")


def soon() -> int:
    return int(time.time()) + HOUR


HUGE = "1" + "0" * 400  # the integer 10^400, as JSON writes it
ABSURD_TOKENS = {
    "exp 10^400": f'{{"sub": "mallory", "exp": {HUGE}}}',
    "exp -10^400": f'{{"sub": "mallory", "exp": -{HUGE}}}',
    "exp 1e400 (infinity)": '{"sub": "mallory", "exp": 1e400}',
    "exp NaN": '{"sub": "mallory", "exp": NaN}',
    "exp a string": '{"sub": "mallory", "exp": "tomorrow"}',
    "nbf 10^400": f'{{"sub": "mallory", "exp": {soon()}, "nbf": {HUGE}}}',
    "nbf -10^400": f'{{"sub": "mallory", "exp": {soon()}, "nbf": -{HUGE}}}',
    "iat 10^400": f'{{"sub": "mallory", "exp": {soon()}, "iat": {HUGE}}}',
    "iat -10^400": f'{{"sub": "mallory", "exp": {soon()}, "iat": -{HUGE}}}',
    "scope a number": f'{{"sub": "mallory", "exp": {soon()}, "scope": 5}}',
    "two addresses in email": (
        f'{{"sub": "mallory", "exp": {soon()}, "email": "a@x.example, b@y.example"}}'
    ),
    "a display name in email": (
        f'{{"sub": "mallory", "exp": {soon()}, "email": "Bob <b@y.example>"}}'
    ),
    "email a list": f'{{"sub": "mallory", "exp": {soon()}, "email": ["a@x.example"]}}',
    "name of 300 characters": f'{{"sub": "mallory", "exp": {soon()}, "name": "{"n" * 300}"}}',
}


@pytest.mark.parametrize("payload", ABSURD_TOKENS.values(), ids=ABSURD_TOKENS.keys())
def test_absurd_claims_are_refused_with_a_reason(payload: str) -> None:
    verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))
    token = signed(payload)
    for _ in range(2):  # the second time would come from the verified-token cache
        with pytest.raises(AuthError) as refused:
            verifier.verify(token)
        assert refused.value.reason.startswith(("invalid token", "token expired"))


def test_a_single_plain_email_claim_is_kept() -> None:
    token = signed(f'{{"sub": "ann", "exp": {soon()}, "email": "ann.b+news@mail.example"}}')
    assert (
        TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET))).verify(token).email
        == "ann.b+news@mail.example"
    )


@pytest.mark.parametrize("payload", ABSURD_TOKENS.values(), ids=ABSURD_TOKENS.keys())
async def test_rest_answers_401_with_the_json_error_body(
    server: RunningServer, payload: str
) -> None:
    headers = {"Authorization": f"Bearer {signed(payload)}"}
    status, body = await server.request("GET", "/api/v1/notifications", headers=headers)
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith(("invalid token", "token expired"))


@pytest.mark.parametrize(
    "name", ["exp 10^400", "nbf -10^400", "exp 1e400 (infinity)", "two addresses in email"]
)
async def test_socket_connect_is_refused_with_a_reason(server: RunningServer, name: str) -> None:
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server.url,
            auth={"token": signed(ABSURD_TOKENS[name])},
            transports=["websocket"],
            wait_timeout=5,
        )
    assert errors and errors[0]["message"].startswith(("invalid token", "token expired")), errors
    await client.disconnect()


async def test_an_email_claim_with_two_addresses_never_reaches_a_to_header(
    server: RunningServer,
) -> None:
    """The token is refused, so the user is never recorded with that address."""
    token = signed(f'{{"sub": "eve", "exp": {soon()}, "email": "a@x.example, b@y.example"}}')
    status, _ = await server.request(
        "GET", "/api/v1/preferences", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 401
    status, body = await server.request(
        "PUT",
        "/api/v1/admin/users/eve",
        sub="ops",
        scopes=("notifications:admin",),
        json={"email": "a@x.example, b@y.example"},
    )
    assert status == 422, body


SEGMENTS = [
    b"", b"e", b"eyJ", b"eyJh", b"eyJhbGciOiJIUzI1NiJ9", b"eyJhbGciOiJIUzI1NiJ9=",
    b"YQ==", b"YQ=", b"YQ", b"YR", b"YR==", b"YQ===", b"Y===", b"Y", b"!!!!", b"YQ!=", b"a+b/",
    b"ab cd", b"ab\x00d", b"\xff\xfe\xfd\xfc", b"ab.c", b"====", b"ab=c", b"a" * 4097,
]  # fmt: skip


@pytest.mark.parametrize("segment", SEGMENTS, ids=[repr(s[:20]) for s in SEGMENTS])
def test_the_checked_segment_decoder_refuses_and_keeps_exactly_what_pyjwt_does(
    segment: bytes,
) -> None:
    from backend.security import _CheckedJWS

    def outcome(decode: Any) -> tuple[str, Any]:
        try:
            return "ok", decode(segment, "header")
        except Exception as exc:
            return type(exc).__name__, str(exc)

    assert outcome(_CheckedJWS._decode_base64url_segment) == outcome(
        PyJWS._decode_base64url_segment
    )


def test_a_token_signed_with_another_secret_is_refused_whatever_the_verifier_prepared() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))
    other = PyJWS().encode(f'{{"sub": "eve", "exp": {soon()}}}'.encode(), "o" * 32, "HS256")
    for _ in range(2):
        with pytest.raises(AuthError, match="signature verification failed"):
            verifier.verify(other)
    good = PyJWS().encode(f'{{"sub": "ann", "exp": {soon()}}}'.encode(), TEST_SECRET, "HS256")
    assert verifier.verify(good).sub == "ann"


def test_tokens_without_scopes_or_topics_hold_no_set_of_their_own() -> None:
    """Every held session keeps its claims: an empty set each would be 432 bytes a session."""
    verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))
    first, second = (
        verifier.verify(signed(f'{{"sub": "{sub}", "exp": {soon()}, "topics": []}}'))
        for sub in ("ann", "bob")
    )
    assert first.scopes == first.topics == frozenset()
    assert first.scopes is second.scopes is first.topics is second.topics
    scoped = verifier.verify(signed(f'{{"sub": "cy", "exp": {soon()}, "scope": "a b"}}'))
    assert scoped.scopes == {"a", "b"} and scoped.topics is first.topics
