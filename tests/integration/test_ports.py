"""Two components on one host with the same FACEPIPE_HTTP_PORT: the second stops with one clear line."""

import os
import subprocess
import sys
from pathlib import Path

from facepipe_dev.processes import ChildProcess, free_port


def test_a_second_component_on_a_taken_http_port_stops_with_one_line_naming_port_and_setting(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FACEPIPE_HTTP_HOST": "127.0.0.1", "FACEPIPE_HTTP_PORT": str(port), "LOCAL_MQTT_PORT": str(free_port())}
    with ChildProcess("logger", [sys.executable, "-m", "facepipe", "logger"], tmp_path / "first.log", env=env) as first:
        first.wait_for_port("127.0.0.1", port)
        second = subprocess.run(
            [sys.executable, "-m", "facepipe", "forwarder", "--spool-dir", str(tmp_path / "spool")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert first.running()
    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    plain = [line for line in second.stderr.splitlines() if not line.startswith("{")]
    assert len(plain) == 1, second.stderr
    assert plain[0].startswith("facepipe forwarder: port ")
    assert f"port {port} on 127.0.0.1" in plain[0] and "already in use" in plain[0] and "FACEPIPE_HTTP_PORT" in plain[0]
