{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "face-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: <release>-<chart>, or the release name alone when it already contains the chart name.
Truncated to 52 characters so that "<fullname>-forwarder" (10) still fits a 63-character name.
*/}}
{{- define "face-edge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: face-edge.component (dict "ctx" $ "component" "camera"). */}}
{{- define "face-edge.component.fullname" -}}
{{- printf "%s-%s" (include "face-edge.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "face-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels: face-edge.labels (dict "ctx" $ "component" "camera"). */}}
{{- define "face-edge.labels" -}}
helm.sh/chart: {{ include "face-edge.chart" .ctx }}
{{ include "face-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: facepipe
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: they never change across upgrades. */}}
{{- define "face-edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "face-edge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
metadata.annotations of an object, or nothing: (dict "ctx" $ "wave" "broker" "annotations" (dict ...)),
"wave" (a stage of face-edge.syncWave) and "annotations" (the object's own) optional. Later ones win:
commonAnnotations, then the sync wave (only with argocd.syncWaves.enabled), then the object's own.
*/}}
{{- define "face-edge.annotations" -}}
{{- $wave := dict -}}
{{- if and .wave .ctx.Values.argocd.syncWaves.enabled -}}
{{- $wave = dict "argocd.argoproj.io/sync-wave" (include "face-edge.syncWave" .wave) -}}
{{- end -}}
{{- with mergeOverwrite (dict) (.ctx.Values.commonAnnotations | default dict) $wave (.annotations | default dict) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Argo CD sync wave of a stage (argocd/README.md, "Sync waves"), as the annotation's string:
  broker  "-1"  the edge broker and everything its pod needs or that must exist before the apps
                start: ServiceAccount, ConfigMap, Secret, PVC, Service, both NetworkPolicies
  camera  "1"   the camera (Deployment, Service), after the forwarder: the forwarder's persistent
                session on the edge broker exists before the first face is published
  (none)  0     logger, forwarder (Deployments, Services, spool PVC), uplink Secrets
A wave waits until its objects are Healthy, so a PVC stays in its pod's wave: a
WaitForFirstConsumer claim (k3s local-path) is Pending until its pod exists.
*/}}
{{- define "face-edge.syncWave" -}}
{{- $waves := dict "broker" "-1" "camera" "1" -}}
{{- if not (hasKey $waves .) -}}
{{- fail (printf "face-edge.syncWave: unknown stage %q" .) -}}
{{- end -}}
{{- get $waves . -}}
{{- end -}}

{{/* The device id: deviceId, else the release name. */}}
{{- define "face-edge.deviceId" -}}
{{- default .Release.Name .Values.deviceId -}}
{{- end -}}

{{/* image reference from an image dict: face-edge.image (dict "image" .Values.image "default" .Chart.AppVersion). */}}
{{- define "face-edge.imageRef" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .default .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "face-edge.image" -}}
{{- include "face-edge.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "face-edge.broker.image" -}}
{{- include "face-edge.imageRef" (dict "image" .Values.broker.image "default" "2.0.22") -}}
{{- end -}}

{{- define "face-edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "face-edge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret names. */}}
{{- define "face-edge.cloudAuth.secretName" -}}
{{- default (printf "%s-uplink" (include "face-edge.fullname" .)) .Values.cloud.auth.existingSecret -}}
{{- end -}}

{{- define "face-edge.cloudAuth.enabled" -}}
{{- if or .Values.cloud.auth.existingSecret .Values.cloud.auth.password -}}true{{- end -}}
{{- end -}}

{{- define "face-edge.cloudCa.secretName" -}}
{{- default (printf "%s-uplink-ca" (include "face-edge.fullname" .)) .Values.cloud.tls.ca.existingSecret -}}
{{- end -}}

{{- define "face-edge.cloudCa.enabled" -}}
{{- if and .Values.cloud.tls.enabled (or .Values.cloud.tls.ca.existingSecret .Values.cloud.tls.ca.pem) -}}true{{- end -}}
{{- end -}}

{{- define "face-edge.brokerAuth.secretName" -}}
{{- default (printf "%s-broker-auth" (include "face-edge.fullname" .)) .Values.broker.auth.existingSecret -}}
{{- end -}}

{{/* The edge broker's in-cluster address: its Service name. */}}
{{- define "face-edge.broker.host" -}}
{{- include "face-edge.component.fullname" (dict "ctx" . "component" "broker") -}}
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

{{/* Fail early, saying what to set, when a required value is missing or values contradict. */}}
{{- define "face-edge.validate" -}}
{{- $needs := include "face-edge.privilegedNeeds" . | trim -}}
{{- if and $needs (ne .Values.podSecurity.level "privileged") -}}
{{- fail (printf "\n\nface-edge: the namespace's Pod Security level %q would reject these pods; they need \"privileged\":\n  %s\nSet podSecurity.level=privileged (and label the namespace: pod-security.kubernetes.io/enforce=privileged), or use camera.accessMode=devicePlugin and a persistentVolumeClaim spool.\n" .Values.podSecurity.level (splitList "\n" $needs | join "\n  ")) -}}
{{- end -}}
{{- if and .Values.argocd.syncWaves.enabled (hasKey .Values.commonAnnotations "argocd.argoproj.io/sync-wave") -}}
{{- fail "\n\nface-edge: commonAnnotations sets argocd.argoproj.io/sync-wave, which would move only the objects without a wave of their own and break the order of argocd.syncWaves (broker first). Remove it, or set argocd.syncWaves.enabled=false to put every object in that one wave.\n" -}}
{{- end -}}
{{- if not .Values.cloud.host -}}
{{- fail "\n\nface-edge: cloud.host is required: the address of the face-cloud broker that this device forwards faces to.\n  helm install <device> charts/face-edge --set cloud.host=mqtt.example.com\n" -}}
{{- end -}}
{{- if and .Values.broker.auth.enabled (not .Values.broker.auth.existingSecret) (not .Values.broker.auth.password) -}}
{{- fail "\n\nface-edge: broker.auth.enabled needs broker.auth.existingSecret or broker.auth.password.\n" -}}
{{- end -}}
{{- if and .Values.cloud.tls.ca.existingSecret .Values.cloud.tls.ca.pem -}}
{{- fail "\n\nface-edge: set cloud.tls.ca.existingSecret or cloud.tls.ca.pem, not both.\n" -}}
{{- end -}}
{{- if and .Values.cloud.auth.existingSecret .Values.cloud.auth.password -}}
{{- fail "\n\nface-edge: set cloud.auth.existingSecret or cloud.auth.password, not both (the password belongs in the Secret).\n" -}}
{{- end -}}
{{- if and (eq .Values.forwarder.spool.type "hostPath") .Values.forwarder.spool.existingClaim -}}
{{- fail "\n\nface-edge: forwarder.spool.existingClaim only applies to type persistentVolumeClaim.\n" -}}
{{- end -}}
{{- $sizeBytes := include "face-edge.bytes" .Values.forwarder.spool.size | int64 -}}
{{- $maxBytes := include "face-edge.spool.maxBytes" . | int64 -}}
{{- if lt $sizeBytes 16777216 -}}
{{- fail (printf "\n\nface-edge: forwarder.spool.size (%s) is too small for a spool: give it at least 16Mi.\n" .Values.forwarder.spool.size) -}}
{{- end -}}
{{- if gt (add $maxBytes 8388608) $sizeBytes -}}
{{- fail (printf "\n\nface-edge: forwarder.spool.maxBytes (%d) must stay at least 8 MiB below forwarder.spool.size (%s = %d bytes): the spool may exceed its limit by one 8 MiB segment, and a full volume stops it (an emptyDir over its size limit evicts the pod). Lower maxBytes (0: derived from size) or raise size (with existingClaim: set size to the claim's size).\n" $maxBytes .Values.forwarder.spool.size $sizeBytes) -}}
{{- end -}}
{{- end -}}

{{/* A Kubernetes quantity ("2Gi", "500M", "1.5e9") in bytes, as an integer. */}}
{{- define "face-edge.bytes" -}}
{{- $q := toString . -}}
{{- $number := regexFind "^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?" $q -}}
{{- $suffix := trimPrefix $number $q -}}
{{- $factors := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 1e-3 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- if not (hasKey $factors $suffix) -}}
{{- fail (printf "\n\nface-edge: %q is not a Kubernetes quantity.\n" $q) -}}
{{- end -}}
{{- mulf (float64 $number) (get $factors $suffix) | floor | int64 -}}
{{- end -}}

{{/* The volume the spool lives on: spool.type, or an emptyDir when spool.enabled is false. */}}
{{- define "face-edge.spool.type" -}}
{{- if .Values.forwarder.spool.enabled -}}{{ .Values.forwarder.spool.type }}{{- else -}}emptyDir{{- end -}}
{{- end -}}

{{/* FACEPIPE_SPOOL_MAX_BYTES: spool.maxBytes, or 90% of spool.size less one 8 MiB spool segment. */}}
{{- define "face-edge.spool.maxBytes" -}}
{{- if .Values.forwarder.spool.maxBytes -}}
{{- .Values.forwarder.spool.maxBytes | int64 -}}
{{- else -}}
{{- $size := include "face-edge.bytes" .Values.forwarder.spool.size | float64 -}}
{{- sub (mulf $size 0.9 | floor | int64) 8388608 -}}
{{- end -}}
{{- end -}}

{{/* Pod placement: the component's own value, else the global one. (dict "ctx" $ "values" .Values.camera) */}}
{{- define "face-edge.placement" -}}
{{- with (default .ctx.Values.nodeSelector .values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .ctx.Values.affinity .values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .ctx.Values.tolerations .values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .ctx.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by every pod of the chart. */}}
{{- define "face-edge.podCommon" -}}
serviceAccountName: {{ include "face-edge.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations of the facepipe pods. */}}
{{- define "face-edge.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.httpPort | quote }}
prometheus.io/path: /metrics
{{- end }}
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
  value: {{ include "face-edge.broker.host" . | quote }}
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

{{/* The facepipe containers' security context. */}}
{{- define "face-edge.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Probes of a facepipe container. */}}
{{- define "face-edge.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}

{{/* A checksum of a rendered template, for pod annotations that roll pods on change. */}}
{{- define "face-edge.checksum" -}}
{{- include (print .ctx.Template.BasePath "/" .file) .ctx | sha256sum -}}
{{- end -}}

{{/* What the ServiceMonitor / PodMonitor select: this release's camera, logger, forwarder (not the broker, not the helm test pod). */}}
{{- define "face-edge.monitorSelector" -}}
namespaceSelector:
  matchNames:
    - {{ .Release.Namespace | quote }}
selector:
  matchLabels:
    {{- include "face-edge.selectorLabels" (dict "ctx" .) | nindent 4 }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: [camera, logger, forwarder]
{{- end -}}

{{/* The scrape settings of a ServiceMonitor endpoint / PodMonitor podMetricsEndpoint: (a metrics.*Monitor value). */}}
{{- define "face-edge.monitorEndpoint" -}}
path: /metrics
{{- with .interval }}
interval: {{ . | quote }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . | quote }}
{{- end }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
