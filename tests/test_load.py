"""Many sites on one broker, and topic names that would escape a site's own topics.

A house is many sites on one Mosquitto: 20 real Bus instances (each with its own on-disk
outbox, network thread and client id) publish at once; one subscriber on the wildcard sees
everything, in each site's order. Site names and prefixes that contain MQTT wildcards or
separators would subscribe to or publish on other sites' topics, so they are refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Subscriber

from assistant import config
from assistant.hermes import Topics
from assistant.mqtt import Bus, MqttSettings
from assistant.result import Result

SITES = 20
PER_SITE = 50


def publish_site(bus: Bus, site: str, start: threading.Barrier) -> None:
    start.wait(10)  # every site begins at the same moment
    for i in range(PER_SITE):
        now = time.time()
        bus.publish_transcript(
            Result(text=f"turn on light {i}", intent="HassTurnOn", confidence=0.9),
            utterance_id=f"{site}-{i:03d}",
            started=now - 1,
            ended=now,
            latency_ms=10.0,
            model="load",
        )


def test_twenty_sites_publish_into_one_broker(mosquitto_broker: Any, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, ["assistant/+/transcript"])
    sites = [f"room{n:02d}" for n in range(SITES)]
    buses = [
        Bus(
            MqttSettings(
                host=mosquitto_broker.host,
                port=mosquitto_broker.port,
                site=site,
                reconnect_min_delay=0.05,
                reconnect_max_delay=0.5,
            ),
            tmp_path / f"{site}.sqlite",
            on_say=lambda _r: None,
        )
        for site in sites
    ]
    barrier = threading.Barrier(SITES)
    threads = [
        threading.Thread(target=publish_site, args=(bus, site, barrier))
        for bus, site in zip(buses, sites, strict=True)
    ]
    try:
        for bus in buses:
            bus.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(bus.flush(60) for bus in buses), "an outbox did not drain"
        # Ids name their site ("room07-012"), so unique ids are unique (site, id) pairs.
        assert sub.wait_for(lambda: len(set(sub.ids)) >= SITES * PER_SITE, 30)
    finally:
        for bus in buses:
            bus.stop(2)
        sub.close()
    received: list[tuple[str, str]] = []
    for topic, payload, _, _ in sub.messages:
        data = json.loads(payload)
        assert topic == f"assistant/{data['site']}/transcript"  # no site writes elsewhere
        received.append((data["site"], data["id"]))
    per_site: dict[str, list[str]] = defaultdict(list)
    for site, uid in received:
        if uid not in per_site[site]:  # at least once: a resend may repeat an id
            per_site[site].append(uid)
    assert sorted(per_site) == sites
    for site in sites:
        assert per_site[site] == [f"{site}-{i:03d}" for i in range(PER_SITE)], site
    assert sum(bus.delivered for bus in buses) >= SITES * PER_SITE * 3  # + Hermes messages


# --------------------------------------------------------------- topic names

BAD_LEVELS = ["", "+", "#", "a/b", "/", "kitchen/#", "kit+chen", "bed#room", "nul\x00"]


@pytest.mark.parametrize("site", BAD_LEVELS)
def test_site_names_that_escape_their_topics_are_refused(site: str) -> None:
    with pytest.raises(ValueError, match="mqtt site"):
        MqttSettings(host="localhost", site=site)
    with pytest.raises(ValueError):
        Topics(site)


@pytest.mark.parametrize("site", ["+", "a/b", "#"])
def test_config_names_the_bad_site_key_and_line(tmp_path: Path, site: str) -> None:
    path = tmp_path / "assistant.toml"
    path.write_text(f'[mqtt]\nhost = "localhost"\nsite = "{site}"\n', encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"assistant\.toml:3: mqtt\.site"):
        config.load(path)


@pytest.mark.parametrize("site", ["kitchen", "living-room", "Küche", "room_2", "a b"])
def test_ordinary_site_names_are_accepted(site: str) -> None:
    assert MqttSettings(host="localhost", site=site).topics.transcript == (
        f"assistant/{site}/transcript"
    )


@pytest.mark.parametrize("prefix", ["home/+", "#", "", "a//b"])
def test_bad_topic_prefix_is_refused_by_topics(prefix: str) -> None:
    with pytest.raises(ValueError, match="topic prefix"):
        Topics("kitchen", prefix)


def test_config_names_a_bad_topic_prefix(tmp_path: Path) -> None:
    path = tmp_path / "assistant.toml"
    path.write_text('[mqtt]\nhost = "localhost"\ntopic_prefix = "home/+"\n', encoding="utf-8")
    with pytest.raises(config.ConfigError, match="topic_prefix"):
        config.load(path)
