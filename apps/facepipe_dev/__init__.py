"""facepipe's devkit: what runs the pipeline on one machine, for `facepipe run`, the tests and the bench.

None of it runs in a deployed component. The modules `facepipe run` needs use only the
product's dependencies and ship in the image; the rest need the `test` extra and serve the
tests and the bench.

- processes: child processes, free ports, the one wait helper (`poll` / `wait_until`)
- brokers, pki, brokerauth: local Mosquitto brokers, a throwaway CA, password and ACL files
- components: one `facepipe <component>` process configured through its environment
- store, rig: where a rig's processor stores, and the rig (brokers, store, four components)
- run: the `facepipe run` command
- loadgen, mqtt: face publishers and subscribers; an MQTT client for tests
- paths: the repository, the shared data, the models
- rgw, kube, podman, helm, prometheus, detection: Ceph RGW, a Kubernetes API server, Podman,
  helm and chart helpers, Prometheus binaries, detector accuracy (the `test` extra)
"""
