"""A re-creation of the ORIGINAL inline forwarder, for orientation: on_message republishes directly.

Two paho clients with their default settings; the edge client's on_message publishes each message
to `<remote topic>/<device>` on the cloud at QoS 1 and returns (paho then acknowledges it to the
edge broker, whether or not the cloud has it yet). MQTT 5 on both sides so the properties go along.

    python -m bench.original_forwarder --local-port P --remote-port Q --device D
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.original_forwarder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--local-port", type=int, required=True)
    parser.add_argument("--remote-port", type=int, required=True)
    parser.add_argument("--local-topic", default="cam_bin")
    parser.add_argument("--remote-topic", default="cam_bin_remote")
    parser.add_argument("--device", required=True)
    args = parser.parse_args(argv)
    target = f"{args.remote_topic}/{args.device}"

    remote = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"original-forwarder-remote-{args.device}", protocol=mqtt.MQTTv5)
    local = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"original-forwarder-local-{args.device}", protocol=mqtt.MQTTv5)
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        remote.publish(target, msg.payload, qos=1, properties=msg.properties)

    local.on_message = on_message
    local.on_connect = lambda client, *_a: client.subscribe(args.local_topic, qos=1)
    local.on_subscribe = lambda *_a: subscribed.set()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    remote.connect(args.host, args.remote_port, keepalive=60)
    remote.loop_start()
    local.connect(args.host, args.local_port, keepalive=60)
    local.loop_start()
    if subscribed.wait(30):
        print(json.dumps({"event": "ready", "t": time.time()}), flush=True)
    stop.wait()
    local.disconnect()
    local.loop_stop()
    remote.disconnect()
    remote.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
