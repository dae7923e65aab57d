"""env.example is the settings' documentation: every variable the services read is listed there, nothing else
is, and every value it shows is the default the code uses (so the two cannot drift apart)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from control_api.settings import ApiSettings
from stream_worker.settings import WorkerSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "env.example"
READ_ELSEWHERE = {"WS_GATEWAY_ALEMBIC_INI"}  # the development launcher's own


class Recording(Mapping[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition("=")
        values[name.strip()] = rest.split("#", 1)[0].strip()
    return values


def test_env_example_lists_exactly_the_variables_the_services_read() -> None:
    api_env, worker_env = Recording({"WS_GATEWAY_API_KEY": "k"}), Recording({})
    ApiSettings.from_env(api_env)
    WorkerSettings.from_env(worker_env, hostname="h")
    read = api_env.asked | worker_env.asked
    listed = set(example())
    assert read - listed == set(), "read by the code but missing from env.example"
    assert listed - read - READ_ELSEWHERE == set(), "listed in env.example but read by nothing"


def test_every_value_in_env_example_is_the_default() -> None:
    shown = {name: value for name, value in example().items() if value}
    api = ApiSettings.from_env({**shown, "WS_GATEWAY_API_KEY": "k"})
    assert api == ApiSettings.from_env({"WS_GATEWAY_API_KEY": "k"})
    worker = WorkerSettings.from_env(shown, hostname="h")
    assert worker == WorkerSettings.from_env({}, hostname="h")
