"""The download probe answers from the settings it is given (offline, Hub address, proxies)."""

from __future__ import annotations

import pytest

from zsindex.config import NetworkSettings
from zsindex.encoders import network


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []

    def fake_probe(host: str, port: int, timeout: float) -> bool:
        seen.append((host, port))
        return True

    monkeypatch.setattr(network, "_probe", fake_probe)
    return seen


def test_offline_answers_without_probing(probes: list[tuple[str, int]]) -> None:
    offline = NetworkSettings(offline=True)
    assert network.hub_reachable(offline) is False
    assert network.url_reachable("https://example.org/w.bin", offline) is False
    assert probes == []


def test_probes_the_configured_hub_or_its_proxy(probes: list[tuple[str, int]]) -> None:
    assert network.hub_reachable(NetworkSettings()) is True
    assert network.hub_reachable(NetworkSettings(hf_endpoint="http://hub.local:8080")) is True
    proxied = NetworkSettings(https_proxy="http://proxy.local:3128", all_proxy="http://all:1")
    assert network.url_reachable("https://example.org/w.bin", proxied) is True
    assert network.url_reachable("http://example.org/w.bin", proxied) is True
    assert probes == [
        ("huggingface.co", 443),
        ("hub.local", 8080),
        ("proxy.local", 3128),
        ("all", 1),
    ]
