"""Names of the Prometheus metrics that the devkit, the tests and the bench read, as the components declare them.

They are exported: the alert rules, the dashboards and the README use the same names, so a name here changes
only on purpose, everywhere at once. Counters carry their `_total` suffix, as they appear on /metrics.
"""

from __future__ import annotations

CAMERA_FRAMES = "facepipe_camera_frames_total"
CAMERA_FRAMES_DROPPED = "facepipe_camera_frames_dropped"
CAMERA_FACES_DETECTED = "facepipe_camera_faces_detected_total"
CAMERA_FACES_PUBLISHED = "facepipe_camera_faces_published_total"

LOGGER_FACES = "facepipe_logger_faces_total"
LOGGER_LOST = "facepipe_logger_lost_total"
LOGGER_DUPLICATES = "facepipe_logger_duplicates_total"

FORWARDER_RECEIVED = "facepipe_forwarder_received_total"
FORWARDER_FORWARDED = "facepipe_forwarder_forwarded_total"
FORWARDER_REFUSED = "facepipe_forwarder_refused_total"

PROCESSOR_RECEIVED = "facepipe_processor_received_total"
PROCESSOR_STORED = "facepipe_processor_stored_total"
PROCESSOR_REJECTED = "facepipe_processor_rejected_total"
PROCESSOR_STORE_ERRORS = "facepipe_processor_store_errors_total"
PROCESSOR_STORE_REFUSED = "facepipe_processor_store_refused_total"

MQTT_CONNECTED = "facepipe_mqtt_connected"
MQTT_CONNECTS = "facepipe_mqtt_connects_total"
