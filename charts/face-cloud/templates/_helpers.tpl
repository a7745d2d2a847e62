{{/* vim: set filetype=mustache: */}}
{{/*
face-cloud's own helpers; the ones it shares with face-edge (names, labels, annotations, images,
placement, pod commons, probes, checksums, validation) are facepipe.* in charts/facepipe-common.

Argo CD sync waves (facepipe.syncWave; argocd/README.md, "Sync waves"):
  broker  "-1"  the broker and everything its pod needs or that must exist before the processors
                start: ServiceAccount, ConfigMap, users and TLS Secrets, PVC, the in-cluster
                Service, both NetworkPolicies
  (none)  0     the processors (StatefulSet, Services, faces PVC, S3 Secret, HPA, PDB) and the
                external broker Service: a LoadBalancer still waiting for an address is not
                Healthy and must not hold the broker's wave
A wave waits until its objects are Healthy, so a PVC stays in its pod's wave: a
WaitForFirstConsumer claim (k3s local-path) is Pending until its pod exists.
*/}}

{{/* Secret names. The users Secret: plain-text passwords, one key per user. */}}
{{- define "face-cloud.users.secretName" -}}
{{- default (printf "%s-broker-users" (include "facepipe.fullname" .)) .Values.broker.auth.existingSecret -}}
{{- end -}}

{{- define "face-cloud.tls.secretName" -}}
{{- default (printf "%s-broker-tls" (include "facepipe.fullname" .)) .Values.broker.tls.existingSecret -}}
{{- end -}}

{{- define "face-cloud.s3.secretName" -}}
{{- default (printf "%s-s3" (include "facepipe.fullname" .)) .Values.processor.store.s3.credentials.existingSecret -}}
{{- end -}}

{{/* S3 credentials come from a Secret (chart-made or existing); otherwise the AWS default chain. */}}
{{- define "face-cloud.s3.credentials" -}}
{{- $c := .Values.processor.store.s3.credentials -}}
{{- if and (eq .Values.processor.store.type "s3") (or $c.existingSecret $c.accessKeyId) -}}true{{- end -}}
{{- end -}}

{{/*
Trust for an https S3 endpoint whose certificate a private CA signs (processor.store.s3.caBundle):
boto3 reads AWS_CA_BUNDLE. "env", "mount" or "volume" for the processors' and the gallery's pods.
(dict "ctx" $ "part" "env")
*/}}
{{- define "face-cloud.s3.caBundle" -}}
{{- $store := .ctx.Values.processor.store -}}
{{- $ca := $store.s3.caBundle -}}
{{- if and (eq $store.type "s3") $ca.existingSecret -}}
{{- if eq .part "env" }}
- name: AWS_CA_BUNDLE
  value: {{ printf "/etc/facepipe/s3-ca/%s" $ca.key | quote }}
{{- else if eq .part "mount" }}
- name: s3-ca
  mountPath: /etc/facepipe/s3-ca
  readOnly: true
{{- else }}
- name: s3-ca
  secret:
    secretName: {{ $ca.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- end }}
{{- end }}
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
{{- $name := include "facepipe.component.fullname" (dict "ctx" . "component" "processor") -}}
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

{{/* What contradicts in the values: every problem, each saying what to set, reported at once (facepipe.validate). */}}
{{- define "face-cloud.validate" -}}
{{- $problems := list -}}
{{- if and .Values.argocd.syncWaves.enabled (hasKey .Values.commonAnnotations "argocd.argoproj.io/sync-wave") -}}
{{- $problems = append $problems "commonAnnotations sets argocd.argoproj.io/sync-wave, which would move only the objects without a wave of their own and break the order of argocd.syncWaves (broker first). Remove it, or set argocd.syncWaves.enabled=false to put every object in that one wave." -}}
{{- end -}}
{{- $store := .Values.processor.store -}}
{{- if and (eq $store.type "s3") (not $store.s3.bucket) -}}
{{- $problems = append $problems "processor.store.type=s3 needs processor.store.s3.bucket (and, unless the pods get AWS credentials another way, processor.store.s3.credentials.existingSecret)." -}}
{{- end -}}
{{- if and $store.s3.credentials.existingSecret (or $store.s3.credentials.accessKeyId $store.s3.credentials.secretAccessKey) -}}
{{- $problems = append $problems "set processor.store.s3.credentials.existingSecret or the access keys, not both." -}}
{{- end -}}
{{- if and $store.s3.credentials.accessKeyId (not $store.s3.credentials.secretAccessKey) -}}
{{- $problems = append $problems "processor.store.s3.credentials.accessKeyId needs processor.store.s3.credentials.secretAccessKey." -}}
{{- end -}}
{{- if and (eq $store.type "s3") (ne $store.s3.sse "none") (hasPrefix "http://" $store.s3.endpoint) -}}
{{- $problems = append $problems (printf "processor.store.s3.sse=%s over the plain-http endpoint %s: Ceph RGW refuses server-side encryption without TLS (InvalidRequest) and no face would be stored. Use an https:// endpoint (processor.store.s3.caBundle.existingSecret for a private CA), or set processor.store.s3.sse=none and encrypt on the server's side." $store.s3.sse $store.s3.endpoint) -}}
{{- end -}}
{{- if and (eq $store.s3.sse "none") $store.s3.kmsKeyId -}}
{{- $problems = append $problems "processor.store.s3.kmsKeyId needs processor.store.s3.sse=aws:kms." -}}
{{- end -}}
{{- if and (not .Values.broker.tls.enabled) (not .Values.broker.service.exposePlain) -}}
{{- $problems = append $problems "the devices could reach no port: keep broker.tls.enabled=true (recommended) or set broker.service.exposePlain=true." -}}
{{- end -}}
{{- if and .Values.broker.auth.existingSecret .Values.broker.auth.devices -}}
{{- $problems = append $problems "broker.auth.devices is ignored with broker.auth.existingSecret: put the devices' passwords into that Secret instead." -}}
{{- end -}}
{{- $reserved := list .Values.broker.auth.processor.username .Values.broker.auth.probe.username .Values.gallery.broker.username "unknown" -}}
{{- range .Values.broker.auth.devices -}}
{{- if has .name $reserved -}}
{{- $problems = append $problems (printf "device %q uses the name of the processor, probe or gallery user, or the reserved \"unknown\"; pick another device id." .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.broker.tls.useIdentityAsUsername (not .Values.broker.tls.requireClientCertificate) -}}
{{- $problems = append $problems "broker.tls.useIdentityAsUsername needs broker.tls.requireClientCertificate (the user name comes from the client's certificate)." -}}
{{- end -}}
{{- if and .Values.broker.tls.requireClientCertificate (not .Values.broker.tls.enabled) -}}
{{- $problems = append $problems "broker.tls.requireClientCertificate needs broker.tls.enabled." -}}
{{- end -}}
{{- $problems = concat $problems (include "face-cloud.gallery.problems" . | fromJsonArray) -}}
{{- include "facepipe.validate" (dict "ctx" . "problems" $problems) -}}
{{- end -}}

{{/* What the ServiceMonitor / PodMonitor select: this release's processors and gallery (not the broker, not the helm test pod). */}}
{{- define "face-cloud.monitorSelector" -}}
namespaceSelector:
  matchNames:
    - {{ .Release.Namespace | quote }}
selector:
  matchLabels:
    {{- include "facepipe.selectorLabels" (dict "ctx" .) | nindent 4 }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: [processor, gallery]
    - key: facepipe/headless
      operator: DoesNotExist
{{- end -}}
