"""The recorded Bybit messages in ../shared/bybit/samples (read-only; never edit one to make a test pass).

BYBIT_SAMPLES_DIR overrides the location.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.enums import Endpoint
from stream_worker.bybit.events import Push
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials

SAMPLES = Path(
    os.environ.get("BYBIT_SAMPLES_DIR") or Path(__file__).resolve().parents[3] / "shared" / "bybit" / "samples"
)


def sample_text(name: str) -> str:
    return (SAMPLES / name).read_text()


def sample(name: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(sample_text(name))
    return message


def compact(message: dict[str, Any]) -> str:
    """A message the way Bybit sends it on the wire: one compact line."""
    return json.dumps(message, separators=(",", ":"))


def push_of(text: str, endpoint: Endpoint) -> Push:
    """The `Push` the protocol core makes of a frame, as the worker receives it."""
    credentials = Credentials(api_key="k", api_secret="s") if endpoint.private else None
    (event,) = BybitProtocol(endpoint=endpoint, credentials=credentials).receive(text, now=1.0)
    assert isinstance(event, Push)
    return event
