"""Auth signature vectors (PROTOCOL.md §3.3), the auth frame on the wire, and secrets kept out of reprs."""

from __future__ import annotations

import json

import pytest

from shared.enums import Endpoint
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials, auth_signature

VECTORS = [
    ("test-secret", 1662350400000, "f072aab6fa18cd774da998325df6cfc87c3ccf10d5722e6b43b570c5feaf6172"),
    ("test-secret", 1700000000000, "5e1a6810262f270b783cf759f856aadee413643be3c03d0fb89dd22261e41df0"),
]


@pytest.mark.parametrize(("secret", "expires_ms", "expected"), VECTORS)
def test_signature_matches_protocol_vectors(secret: str, expires_ms: int, expected: str) -> None:
    assert auth_signature(secret, expires_ms) == expected


def test_signature_is_lowercase_hex_sha256() -> None:
    signature = auth_signature("ünïcode-secret", 1)
    assert len(signature) == 64
    assert signature == signature.lower()
    int(signature, 16)


def test_auth_frame_is_exactly_the_documented_shape() -> None:
    protocol = BybitProtocol(
        endpoint=Endpoint.PRIVATE,
        credentials=Credentials(api_key="test-key", api_secret="test-secret"),
        auth_expiry_ms=10_000,
    )
    protocol.connection_made(now=0.0, wall_ms=1662350390000)
    auth, *_ = protocol.frames_to_send()
    assert auth == (
        '{"req_id":"auth","op":"auth","args":["test-key",1662350400000,'
        '"f072aab6fa18cd774da998325df6cfc87c3ccf10d5722e6b43b570c5feaf6172"]}'
    )
    assert isinstance(json.loads(auth)["args"][1], int)  # expires is a JSON number, not a string


def test_auth_expires_moves_with_the_wall_clock_on_each_connect() -> None:
    protocol = BybitProtocol(
        endpoint=Endpoint.PRIVATE,
        credentials=Credentials(api_key="k", api_secret="s"),
        auth_expiry_ms=5_000,
    )
    protocol.connection_made(now=0.0, wall_ms=1_000_000)
    first = json.loads(protocol.frames_to_send()[0])["args"]
    protocol.connection_lost()
    protocol.connection_made(now=50.0, wall_ms=1_050_000)
    second = json.loads(protocol.frames_to_send()[0])["args"]
    assert first[1] == 1_005_000
    assert second[1] == 1_055_000
    assert second[2] == auth_signature("s", 1_055_000)


def test_credentials_repr_and_str_hide_the_secret() -> None:
    credentials = Credentials(api_key="abc", api_secret="very-secret")
    assert repr(credentials) == "Credentials(api_key='abc', api_secret='***')"
    assert "very-secret" not in str(credentials)
    assert "very-secret" not in f"{credentials}"


def test_protocol_repr_does_not_leak_the_secret() -> None:
    protocol = BybitProtocol(
        endpoint=Endpoint.PRIVATE, credentials=Credentials(api_key="abc", api_secret="very-secret")
    )
    assert "very-secret" not in repr(protocol)
    assert "very-secret" not in repr(vars(protocol))


def test_private_endpoint_without_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        BybitProtocol(endpoint=Endpoint.PRIVATE)
