"""Shared fixtures: real Mosquitto brokers, a real S3 server (Ceph RGW), helm binaries, a Kubernetes API server.

Every fixture starts its processes on free loopback ports and stops them even when a test fails.
"""

from __future__ import annotations
