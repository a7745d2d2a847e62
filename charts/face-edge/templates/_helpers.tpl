{{/* vim: set filetype=mustache: */}}
{{/*
face-edge's own helpers; the ones it shares with face-cloud (names, labels, annotations, images,
placement, pod commons, probes, checksums, validation) are facepipe.* in charts/facepipe-common.

Argo CD sync waves (facepipe.syncWave; argocd/README.md, "Sync waves"):
  broker  "-1"  the edge broker and everything its pod needs or that must exist before the apps
                start: ServiceAccount, ConfigMap, Secret, PVC, Service, both NetworkPolicies
  camera  "1"   the camera (Deployment, Service), after the forwarder: the forwarder's persistent
                session on the edge broker exists before the first face is published
  (none)  0     logger, forwarder (Deployments, Services, spool PVC), uplink Secrets
A wave waits until its objects are Healthy, so a PVC stays in its pod's wave: a
WaitForFirstConsumer claim (k3s local-path) is Pending until its pod exists.
*/}}

{{/* The device id: deviceId, else the release name. */}}
{{- define "face-edge.deviceId" -}}
{{- default .Release.Name .Values.deviceId -}}
{{- end -}}

{{/* Secret names. */}}
{{- define "face-edge.cloudAuth.secretName" -}}
{{- default (printf "%s-uplink" (include "facepipe.fullname" .)) .Values.cloud.auth.existingSecret -}}
{{- end -}}

{{- define "face-edge.cloudAuth.enabled" -}}
{{- if or .Values.cloud.auth.existingSecret .Values.cloud.auth.password -}}true{{- end -}}
{{- end -}}

{{- define "face-edge.cloudCa.secretName" -}}
{{- default (printf "%s-uplink-ca" (include "facepipe.fullname" .)) .Values.cloud.tls.ca.existingSecret -}}
{{- end -}}

{{- define "face-edge.cloudCa.enabled" -}}
{{- if and .Values.cloud.tls.enabled (or .Values.cloud.tls.ca.existingSecret .Values.cloud.tls.ca.pem) -}}true{{- end -}}
{{- end -}}

{{- define "face-edge.brokerAuth.secretName" -}}
{{- default (printf "%s-broker-auth" (include "facepipe.fullname" .)) .Values.broker.auth.existingSecret -}}
{{- end -}}

{{/* Does the camera read a device on the node? (no source, or a source under /dev/) */}}
{{- define "face-edge.camera.usesDevice" -}}
{{- if or (not .Values.camera.source) (hasPrefix "/dev/" .Values.camera.source) -}}true{{- end -}}
{{- end -}}

{{- define "face-edge.camera.devicePath" -}}
{{- default .Values.camera.device .Values.camera.source -}}
{{- end -}}

{{/* Why the pods need the Pod Security level "privileged" (one line each), or nothing: the baseline and
restricted levels refuse privileged containers and every hostPath volume. */}}
{{- define "face-edge.privilegedNeeds" -}}
{{- $cam := .Values.camera -}}
{{- if and $cam.enabled (include "face-edge.camera.usesDevice" .) (has $cam.accessMode (list "privileged" "hostDevice")) }}
camera.accessMode={{ $cam.accessMode }} (a device from the node{{ if eq $cam.accessMode "privileged" }}, a privileged container{{ end }})
{{- end }}
{{- if and .Values.forwarder.spool.enabled (eq .Values.forwarder.spool.type "hostPath") }}
forwarder.spool.type=hostPath
{{- end }}
{{- range $cam.extraVolumes }}
{{- if hasKey . "hostPath" }}
camera.extraVolumes {{ .name }} (a hostPath)
{{- end }}
{{- end }}
{{- end -}}

{{/* What is missing from the values or contradicts: every problem, each saying what to set, reported at once (facepipe.validate). */}}
{{- define "face-edge.validate" -}}
{{- $problems := list -}}
{{- $needs := include "face-edge.privilegedNeeds" . | trim -}}
{{- if and $needs (ne .Values.podSecurity.level "privileged") -}}
{{- $problems = append $problems (printf "the namespace's Pod Security level %q would reject these pods; they need \"privileged\":\n  %s\nSet podSecurity.level=privileged (and label the namespace: pod-security.kubernetes.io/enforce=privileged), or use camera.accessMode=devicePlugin and a persistentVolumeClaim spool." .Values.podSecurity.level (splitList "\n" $needs | join "\n  ")) -}}
{{- end -}}
{{- if and .Values.argocd.syncWaves.enabled (hasKey .Values.commonAnnotations "argocd.argoproj.io/sync-wave") -}}
{{- $problems = append $problems "commonAnnotations sets argocd.argoproj.io/sync-wave, which would move only the objects without a wave of their own and break the order of argocd.syncWaves (broker first). Remove it, or set argocd.syncWaves.enabled=false to put every object in that one wave." -}}
{{- end -}}
{{- if eq (include "face-edge.deviceId" .) "unknown" -}}
{{- $problems = append $problems "the device id \"unknown\" is reserved (the cloud stores faces no topic proves under it): set deviceId, or use another release name." -}}
{{- end -}}
{{- if not .Values.cloud.host -}}
{{- $problems = append $problems "cloud.host is required: the address of the face-cloud broker that this device forwards faces to.\n  helm install <device> charts/face-edge --set cloud.host=mqtt.example.com" -}}
{{- end -}}
{{- if and .Values.broker.auth.enabled (not .Values.broker.auth.existingSecret) (not .Values.broker.auth.password) -}}
{{- $problems = append $problems "broker.auth.enabled needs broker.auth.existingSecret or broker.auth.password." -}}
{{- end -}}
{{- if and .Values.cloud.tls.ca.existingSecret .Values.cloud.tls.ca.pem -}}
{{- $problems = append $problems "set cloud.tls.ca.existingSecret or cloud.tls.ca.pem, not both." -}}
{{- end -}}
{{- if and .Values.cloud.auth.existingSecret .Values.cloud.auth.password -}}
{{- $problems = append $problems "set cloud.auth.existingSecret or cloud.auth.password, not both (the password belongs in the Secret)." -}}
{{- end -}}
{{- if and (eq .Values.forwarder.spool.type "hostPath") .Values.forwarder.spool.existingClaim -}}
{{- $problems = append $problems "forwarder.spool.existingClaim only applies to type persistentVolumeClaim." -}}
{{- end -}}
{{- $sizeBytes := include "facepipe.bytes" .Values.forwarder.spool.size | int64 -}}
{{- $maxBytes := include "face-edge.spool.maxBytes" . | int64 -}}
{{- $segment := include "face-edge.spool.segmentBytes" . | int64 -}}
{{- $segmentMiB := div $segment 1048576 -}}
{{- if lt $sizeBytes (mul 2 $segment) -}}
{{- $problems = append $problems (printf "forwarder.spool.size (%s) is too small for a spool: give it at least %dMi." .Values.forwarder.spool.size (mul 2 $segmentMiB)) -}}
{{- end -}}
{{- if gt (add $maxBytes $segment) $sizeBytes -}}
{{- $problems = append $problems (printf "forwarder.spool.maxBytes (%d) must stay at least %d MiB below forwarder.spool.size (%s = %d bytes): the spool may exceed its limit by one %d MiB segment, and a full volume stops it (an emptyDir over its size limit evicts the pod). Lower maxBytes (0: derived from size) or raise size (with existingClaim: set size to the claim's size)." $maxBytes $segmentMiB .Values.forwarder.spool.size $sizeBytes $segmentMiB) -}}
{{- end -}}
{{- include "facepipe.validate" (dict "ctx" . "problems" $problems) -}}
{{- end -}}

{{/* The volume the spool lives on: spool.type, or an emptyDir when spool.enabled is false. */}}
{{- define "face-edge.spool.type" -}}
{{- if .Values.forwarder.spool.enabled -}}{{ .Values.forwarder.spool.type }}{{- else -}}emptyDir{{- end -}}
{{- end -}}

{{/* The forwarder's spool segment: the app's facepipe.spool.SEGMENT_BYTES, read from files/spool.json (written by
python -m facepipe_dev.generate; a test fails when it is stale). The spool drops whole segments, so it may exceed its limit by one. */}}
{{- define "face-edge.spool.segmentBytes" -}}
{{- (.Files.Get "files/spool.json" | fromJson).segmentBytes | int64 -}}
{{- end -}}

{{/* FACEPIPE_SPOOL_MAX_BYTES: spool.maxBytes, or volumeShare (files/spool.json) of spool.size less one spool segment. The chart derives it, the forwarder reads it. */}}
{{- define "face-edge.spool.maxBytes" -}}
{{- if .Values.forwarder.spool.maxBytes -}}
{{- .Values.forwarder.spool.maxBytes | int64 -}}
{{- else -}}
{{- $size := include "facepipe.bytes" .Values.forwarder.spool.size | float64 -}}
{{- $share := (.Files.Get "files/spool.json" | fromJson).volumeShare | float64 -}}
{{- sub (mulf $size $share | floor | int64) (include "face-edge.spool.segmentBytes" . | int64) -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every facepipe container. */}}
{{- define "face-edge.env.common" -}}
- name: FACEPIPE_DEVICE_ID
  value: {{ include "face-edge.deviceId" . | quote }}
- name: FACEPIPE_HTTP_PORT
  value: {{ .Values.httpPort | quote }}
- name: FACEPIPE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: FACEPIPE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: FACEPIPE_STATUS_INTERVAL_SECONDS
  value: {{ .Values.statusIntervalSeconds | quote }}
{{- end -}}

{{/* LOCAL_MQTT_* : the edge broker, by its Service name. */}}
{{- define "face-edge.env.local" -}}
- name: LOCAL_MQTT_HOST
  value: {{ include "facepipe.broker.host" . | quote }}
- name: LOCAL_MQTT_PORT
  value: {{ .Values.broker.port | quote }}
- name: LOCAL_MQTT_TOPIC
  value: {{ .Values.mqtt.topic | quote }}
- name: LOCAL_MQTT_QOS
  value: {{ .Values.mqtt.qos | quote }}
- name: LOCAL_MQTT_KEEPALIVE
  value: {{ .Values.mqtt.keepalive | quote }}
{{- if .Values.broker.auth.enabled }}
- name: LOCAL_MQTT_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "face-edge.brokerAuth.secretName" . }}
      key: username
- name: LOCAL_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "face-edge.brokerAuth.secretName" . }}
      key: password
{{- end }}
{{- end -}}

{{/* What the ServiceMonitor / PodMonitor select: this release's camera, logger, forwarder (not the broker, not the helm test pod). */}}
{{- define "face-edge.monitorSelector" -}}
namespaceSelector:
  matchNames:
    - {{ .Release.Namespace | quote }}
selector:
  matchLabels:
    {{- include "facepipe.selectorLabels" (dict "ctx" .) | nindent 4 }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: [camera, logger, forwarder]
{{- end -}}
