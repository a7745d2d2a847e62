{{/* Pod placement: the component's own value, else the global one. (dict "ctx" $ "values" .Values.camera) */}}
{{- define "facepipe.placement" -}}
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

{{/* Pod-level fields shared by every pod of a chart. */}}
{{- define "facepipe.podCommon" -}}
serviceAccountName: {{ include "facepipe.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations of the facepipe pods. */}}
{{- define "facepipe.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.httpPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* The facepipe containers' security context. */}}
{{- define "facepipe.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Probes of a facepipe container: /healthz (startup, liveness) and /readyz on its `http` port. */}}
{{- define "facepipe.probes" -}}
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

{{/* A checksum of one of the chart's rendered templates, for pod annotations that roll pods on change:
(dict "ctx" $ "file" "broker-configmap.yaml"). */}}
{{- define "facepipe.checksum" -}}
{{- include (print .ctx.Template.BasePath "/" .file) .ctx | sha256sum -}}
{{- end -}}

{{/* The scrape settings of a ServiceMonitor endpoint / PodMonitor podMetricsEndpoint: (a metrics.*Monitor value). */}}
{{- define "facepipe.monitorEndpoint" -}}
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
