"""Configuration: flags over environment over defaults, the original names, clear errors, --check-config."""

import json
import subprocess
import sys

import pytest

from facepipe import config
from facepipe.cli import build_parser


def load(cls: type, argv: list[str], env: dict[str, str]) -> object:
    args = build_parser().parse_args(argv)
    return config.load(cls, args, env)


def test_original_system_names_still_work() -> None:
    env = {
        "LOCAL_MQTT_HOST": "edge-broker", "LOCAL_MQTT_PORT": "1884", "LOCAL_MQTT_TOPIC": "faces",
        "REMOTE_MQTT_HOST": "cloud.example.com", "REMOTE_MQTT_PORT": "8883", "REMOTE_MQTT_TOPIC": "up",
    }  # fmt: skip
    fwd = load(config.ForwarderSettings, ["forwarder"], env)
    assert isinstance(fwd, config.ForwarderSettings)
    assert (fwd.local.host, fwd.local.port, fwd.local.topic) == ("edge-broker", 1884, "faces")
    assert (fwd.remote.host, fwd.remote.port, fwd.remote.topic) == ("cloud.example.com", 8883, "up")
    proc = load(config.ProcessorSettings, ["processor"], env)
    assert isinstance(proc, config.ProcessorSettings)
    assert (proc.broker.host, proc.broker.port, proc.broker.topic) == ("cloud.example.com", 8883, "up")


def test_defaults_follow_the_design() -> None:
    fwd = config.load(config.ForwarderSettings, None, {})
    assert fwd.local.topic == "cam_bin" and fwd.remote.topic == "cam_bin_remote"
    assert fwd.local.port == 1883 and fwd.local.qos == 1
    proc = config.load(config.ProcessorSettings, None, {})
    assert proc.max_bytes == 2 * 1024 * 1024
    assert proc.storage.store.startswith("file://")


def test_flag_beats_environment() -> None:
    cam = load(config.CameraSettings, ["camera", "--source", "video.mp4", "--local-port", "2000"], {"FACEPIPE_SOURCE": "/dev/video3"})
    assert isinstance(cam, config.CameraSettings)
    assert cam.source == "video.mp4" and cam.broker.port == 2000


def test_every_bad_value_is_listed_with_flag_and_variable() -> None:
    env = {"LOCAL_MQTT_PORT": "70000", "FACEPIPE_DETECTOR": "cnn", "LOCAL_MQTT_QOS": "2", "FACEPIPE_REALTIME": "maybe"}
    env["FACEPIPE_STABLE_MAX_FPS"] = "0.5"  # slower than a track lives unseen
    env["FACEPIPE_CROP_MARGIN"] = "1.5"  # crops the processor would refuse as larger than their face box
    with pytest.raises(config.ConfigError) as info:
        config.load(config.CameraSettings, None, env)
    text = str(info.value)
    for needle in (
        "--local-port / LOCAL_MQTT_PORT", "--detector / FACEPIPE_DETECTOR", "--local-qos / LOCAL_MQTT_QOS", "FACEPIPE_REALTIME",
        "--stable-max-fps / FACEPIPE_STABLE_MAX_FPS", "--crop-margin / FACEPIPE_CROP_MARGIN",
    ):  # fmt: skip
        assert needle in text


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"FACEPIPE_STORE": "ftp://x"}, "FACEPIPE_STORE"),
        ({"FACEPIPE_DEVICE_ID": "a/b"}, "FACEPIPE_DEVICE_ID"),
        ({"FACEPIPE_DEVICE_ID": "unknown"}, "FACEPIPE_DEVICE_ID.*is reserved"),
        ({"REMOTE_MQTT_TOPIC": "cam/#"}, "REMOTE_MQTT_TOPIC"),
        ({"FACEPIPE_MAX_BYTES": "0"}, "FACEPIPE_MAX_BYTES"),
    ],
)
def test_processor_rejects(env: dict[str, str], needle: str) -> None:
    with pytest.raises(config.ConfigError, match=needle):
        config.load(config.ProcessorSettings, None, env)


def test_check_config_prints_effective_config_and_masks_secrets() -> None:
    env = {"REMOTE_MQTT_PASSWORD": "hunter2", "REMOTE_MQTT_HOST": "cloud", "PATH": "/usr/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "facepipe", "forwarder", "--check-config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    doc = json.loads(out)
    assert doc["component"] == "forwarder" and doc["valid"] is True
    assert doc["config"]["REMOTE_MQTT_HOST"] == "cloud"
    assert doc["config"]["REMOTE_MQTT_PASSWORD"] == "***"
    assert "hunter2" not in out


def test_check_config_exits_2_with_a_clear_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facepipe", "logger", "--check-config"],
        env={"LOCAL_MQTT_PORT": "abc", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "LOCAL_MQTT_PORT" in done.stderr and "'abc' is not an integer" in done.stderr


def test_environment_round_trip() -> None:
    settings = load(config.CameraSettings, ["camera", "--source", "/dev/video2", "--realtime", "true"], {})
    assert config.load(config.CameraSettings, None, config.to_environment(settings)) == settings
