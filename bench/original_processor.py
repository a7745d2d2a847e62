"""A faithful re-creation of the ORIGINAL processor, for comparison: all the work inline in paho's callback.

One paho client (MQTT 3.1.1, persistent session, QoS 1 with paho's automatic acknowledgement);
its on_message decodes the image with cv2.imdecode, writes it as PNG to disk with cv2.imwrite,
and uploads that file with boto3 put_object, one message at a time. The S3 endpoint and
credentials come from the standard AWS_* variables.

    python -m bench.original_processor --host H --port P --bucket B [--expect N]

Prints one JSON line per event (`subscribed`, `connected`, `done`) with a wall-clock time `t` and
its CPU time so far `cpu`;
with --expect N it exits after the N-th message.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import cv2
import numpy as np
import paho.mqtt.client as mqtt


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), "cpu": time.process_time(), **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.original_processor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="cam_bin_remote/#")
    parser.add_argument("--client-id", default="original-processor")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="original")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the PNG files are written before upload")
    parser.add_argument("--expect", type=int, default=0, help="exit after this many messages (0: run until SIGTERM)")
    args = parser.parse_args(argv)

    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    handled = 0

    def on_connect(client: mqtt.Client, _u: Any, _flags: Any, _reason: Any, _props: Any) -> None:
        say("connected")
        client.subscribe(args.topic, qos=1)

    def on_subscribe(*_a: Any) -> None:
        say("subscribed")

    def on_message(client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal handled
        image = cv2.imdecode(np.frombuffer(msg.payload, np.uint8), cv2.IMREAD_COLOR)
        name = f"{datetime.now(UTC):%Y%m%d-%H%M%S-%f}-{handled}.png"
        path = workdir / name
        cv2.imwrite(str(path), image)
        with open(path, "rb") as body:
            s3.put_object(Bucket=args.bucket, Key=f"{args.prefix}/{msg.topic.rsplit('/', 1)[-1]}/{name}", Body=body)
        path.unlink()
        handled += 1
        if args.expect and handled >= args.expect:
            say("done", handled=handled)
            client.disconnect()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=False, protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_a: client.disconnect())
    client.connect(args.host, args.port, keepalive=60)
    client.loop_forever()
    say("stopped", handled=handled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
