{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "face-cloud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: <release>-<chart>, or the release name alone when it already contains the chart name.
Truncated to 40 characters: the processor StatefulSet "<fullname>-processor" must stay within 52
(its pods' controller-revision-hash label adds 11), and "<fullname>-processor-headless" within 63.
*/}}
{{- define "face-cloud.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: face-cloud.component (dict "ctx" $ "component" "camera"). */}}
{{- define "face-cloud.component.fullname" -}}
{{- printf "%s-%s" (include "face-cloud.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "face-cloud.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels: face-cloud.labels (dict "ctx" $ "component" "camera"). */}}
{{- define "face-cloud.labels" -}}
helm.sh/chart: {{ include "face-cloud.chart" .ctx }}
{{ include "face-cloud.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: facepipe
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: they never change across upgrades. */}}
{{- define "face-cloud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "face-cloud.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
metadata.annotations of an object, or nothing: (dict "ctx" $ "wave" "broker" "annotations" (dict ...)),
"wave" (a stage of face-cloud.syncWave) and "annotations" (the object's own) optional. Later ones win:
commonAnnotations, then the sync wave (only with argocd.syncWaves.enabled), then the object's own.
*/}}
{{- define "face-cloud.annotations" -}}
{{- $wave := dict -}}
{{- if and .wave .ctx.Values.argocd.syncWaves.enabled -}}
{{- $wave = dict "argocd.argoproj.io/sync-wave" (include "face-cloud.syncWave" .wave) -}}
{{- end -}}
{{- with mergeOverwrite (dict) (.ctx.Values.commonAnnotations | default dict) $wave (.annotations | default dict) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Argo CD sync wave of a stage (argocd/README.md, "Sync waves"), as the annotation's string:
  broker  "-1"  the broker and everything its pod needs or that must exist before the processors
                start: ServiceAccount, ConfigMap, users and TLS Secrets, PVC, the in-cluster
                Service, both NetworkPolicies
  (none)  0     the processors (StatefulSet, Services, faces PVC, S3 Secret, HPA, PDB) and the
                external broker Service: a LoadBalancer still waiting for an address is not
                Healthy and must not hold the broker's wave
A wave waits until its objects are Healthy, so a PVC stays in its pod's wave: a
WaitForFirstConsumer claim (k3s local-path) is Pending until its pod exists.
*/}}
{{- define "face-cloud.syncWave" -}}
{{- $waves := dict "broker" "-1" -}}
{{- if not (hasKey $waves .) -}}
{{- fail (printf "face-cloud.syncWave: unknown stage %q" .) -}}
{{- end -}}
{{- get $waves . -}}
{{- end -}}

{{/* The device id: deviceId, else the release name. */}}
{{- define "face-cloud.imageRef" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .default .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "face-cloud.image" -}}
{{- include "face-cloud.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "face-cloud.broker.image" -}}
{{- include "face-cloud.imageRef" (dict "image" .Values.broker.image "default" "2.0.22") -}}
{{- end -}}

{{- define "face-cloud.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "face-cloud.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret names. */}}
{{/* The broker's in-cluster Service (plain port for the processors, TLS port too). */}}
{{- define "face-cloud.broker.host" -}}
{{- include "face-cloud.component.fullname" (dict "ctx" . "component" "broker") -}}
{{- end -}}

{{/* Secret of plain-text passwords, one key per user. */}}
{{- define "face-cloud.users.secretName" -}}
{{- default (printf "%s-broker-users" (include "face-cloud.fullname" .)) .Values.broker.auth.existingSecret -}}
{{- end -}}

{{- define "face-cloud.tls.secretName" -}}
{{- default (printf "%s-broker-tls" (include "face-cloud.fullname" .)) .Values.broker.tls.existingSecret -}}
{{- end -}}

{{- define "face-cloud.s3.secretName" -}}
{{- default (printf "%s-s3" (include "face-cloud.fullname" .)) .Values.processor.store.s3.credentials.existingSecret -}}
{{- end -}}

{{/* S3 credentials come from a Secret (chart-made or existing); otherwise the AWS default chain. */}}
{{- define "face-cloud.s3.credentials" -}}
{{- $c := .Values.processor.store.s3.credentials -}}
{{- if and (eq .Values.processor.store.type "s3") (or $c.existingSecret $c.accessKeyId) -}}true{{- end -}}
{{- end -}}

{{/* FACEPIPE_STORE */}}
{{- define "face-cloud.store.url" -}}
{{- $store := .Values.processor.store -}}
{{- if eq $store.type "s3" -}}
{{- $prefix := trimAll "/" $store.s3.prefix -}}
{{- if $prefix -}}{{- printf "s3://%s/%s" $store.s3.bucket $prefix -}}{{- else -}}{{- printf "s3://%s" $store.s3.bucket -}}{{- end -}}
{{- else -}}
{{- printf "file://%s" $store.directory.path -}}
{{- end -}}
{{- end -}}

{{/* The probe's topic: <topic>/<probe user>, the only one its ACL lets it write. */}}
{{- define "face-cloud.probe.topic" -}}
{{- printf "%s/%s" .Values.topic .Values.broker.auth.probe.username -}}
{{- end -}}

{{/*
FACEPIPE_PROBE_METRICS_URL of the helm test: the probe sums the stored counter over a
comma-separated list. With a fixed replicaCount, one URL per processor pod through the headless
Service (<statefulset>-<i>.<headless>), so the test sees the face whichever processor stored it.
With autoscaling the pods are not known at render time (a URL of a pod that does not exist fails
every scrape and the probe waits until its timeout), so the processors' Service: one pod per scrape.
*/}}
{{- define "face-cloud.probe.metricsUrls" -}}
{{- $name := include "face-cloud.component.fullname" (dict "ctx" . "component" "processor") -}}
{{- $port := int .Values.httpPort -}}
{{- if .Values.processor.autoscaling.enabled -}}
{{- printf "http://%s:%d/metrics" $name $port -}}
{{- else -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.processor.replicaCount) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless:%d/metrics" $name $i $name $port) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end -}}

{{/*
Values the chart generates are computed once per render and kept in .Values._generated, so that
the checksum annotations (which render the Secret templates a second time) hash exactly the
Secrets that are rendered, not a second random draw.
*/}}
{{- define "face-cloud.generated" -}}
{{- if not (hasKey .Values "_generated") -}}
{{- $_ := set .Values "_generated" (dict) -}}
{{- end -}}
{{- end -}}

{{/*
A user's password for the chart-made users Secret: the value given, else the one already in the
cluster (helm upgrade), else a new random one. (dict "ctx" $ "user" "processor" "password" "...")
*/}}
{{- define "face-cloud.users.password" -}}
{{- if .password -}}
{{- .password -}}
{{- else -}}
{{- include "face-cloud.generated" .ctx -}}
{{- $cache := .ctx.Values._generated -}}
{{- $key := printf "password/%s" .user -}}
{{- if not (hasKey $cache $key) -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace (include "face-cloud.users.secretName" .ctx) -}}
{{- $current := dig "data" .user "" ($secret | default dict) -}}
{{- $_ := set $cache $key (ternary ($current | b64dec) (randAlphaNum 32) (ne $current "")) -}}
{{- end -}}
{{- index $cache $key -}}
{{- end -}}
{{- end -}}

{{/* Fail early, saying what to set, when values contradict. */}}
{{- define "face-cloud.validate" -}}
{{- if and .Values.argocd.syncWaves.enabled (hasKey .Values.commonAnnotations "argocd.argoproj.io/sync-wave") -}}
{{- fail "\n\nface-cloud: commonAnnotations sets argocd.argoproj.io/sync-wave, which would move only the objects without a wave of their own and break the order of argocd.syncWaves (broker first). Remove it, or set argocd.syncWaves.enabled=false to put every object in that one wave.\n" -}}
{{- end -}}
{{- $store := .Values.processor.store -}}
{{- if and (eq $store.type "s3") (not $store.s3.bucket) -}}
{{- fail "\n\nface-cloud: processor.store.type=s3 needs processor.store.s3.bucket (and, unless the pods get AWS credentials another way, processor.store.s3.credentials.existingSecret).\n" -}}
{{- end -}}
{{- if and $store.s3.credentials.existingSecret (or $store.s3.credentials.accessKeyId $store.s3.credentials.secretAccessKey) -}}
{{- fail "\n\nface-cloud: set processor.store.s3.credentials.existingSecret or the access keys, not both.\n" -}}
{{- end -}}
{{- if and $store.s3.credentials.accessKeyId (not $store.s3.credentials.secretAccessKey) -}}
{{- fail "\n\nface-cloud: processor.store.s3.credentials.accessKeyId needs processor.store.s3.credentials.secretAccessKey.\n" -}}
{{- end -}}
{{- if and (eq $store.s3.sse "none") $store.s3.kmsKeyId -}}
{{- fail "\n\nface-cloud: processor.store.s3.kmsKeyId needs processor.store.s3.sse=aws:kms.\n" -}}
{{- end -}}
{{- if and (not .Values.broker.tls.enabled) (not .Values.broker.service.exposePlain) -}}
{{- fail "\n\nface-cloud: the devices could reach no port: keep broker.tls.enabled=true (recommended) or set broker.service.exposePlain=true.\n" -}}
{{- end -}}
{{- if and .Values.broker.auth.existingSecret .Values.broker.auth.devices -}}
{{- fail "\n\nface-cloud: broker.auth.devices is ignored with broker.auth.existingSecret: put the devices' passwords into that Secret instead.\n" -}}
{{- end -}}
{{- $reserved := list .Values.broker.auth.processor.username .Values.broker.auth.probe.username .Values.gallery.broker.username "unknown" -}}
{{- range .Values.broker.auth.devices -}}
{{- if has .name $reserved -}}
{{- fail (printf "\n\nface-cloud: device %q uses the name of the processor, probe or gallery user, or the reserved \"unknown\"; pick another device id.\n" .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.broker.tls.requireClientCertificate (not .Values.broker.tls.enabled) -}}
{{- fail "\n\nface-cloud: broker.tls.requireClientCertificate needs broker.tls.enabled.\n" -}}
{{- end -}}
{{- include "face-cloud.gallery.validate" . -}}
{{- end -}}
{{- define "face-cloud.placement" -}}
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
{{- define "face-cloud.podCommon" -}}
serviceAccountName: {{ include "face-cloud.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations of the facepipe pods. */}}
{{- define "face-cloud.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.httpPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* The facepipe containers' security context. */}}
{{- define "face-cloud.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Probes of a facepipe container. */}}
{{- define "face-cloud.probes" -}}
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
{{- define "face-cloud.checksum" -}}
{{- include (print .ctx.Template.BasePath "/" .file) .ctx | sha256sum -}}
{{- end -}}

{{/* What the ServiceMonitor / PodMonitor select: this release's processors and gallery (not the broker, not the helm test pod). */}}
{{- define "face-cloud.monitorSelector" -}}
namespaceSelector:
  matchNames:
    - {{ .Release.Namespace | quote }}
selector:
  matchLabels:
    {{- include "face-cloud.selectorLabels" (dict "ctx" .) | nindent 4 }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: [processor, gallery]
    - key: facepipe/headless
      operator: DoesNotExist
{{- end -}}

{{/* The scrape settings of a ServiceMonitor endpoint / PodMonitor podMetricsEndpoint: (a metrics.*Monitor value). */}}
{{- define "face-cloud.monitorEndpoint" -}}
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
