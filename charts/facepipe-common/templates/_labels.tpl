{{/* Standard labels: facepipe.labels (dict "ctx" $ "component" "camera"). */}}
{{- define "facepipe.labels" -}}
helm.sh/chart: {{ include "facepipe.chart" .ctx }}
{{ include "facepipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: facepipe
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: they never change across upgrades. */}}
{{- define "facepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facepipe.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
metadata.annotations of an object, or nothing: (dict "ctx" $ "wave" "broker" "annotations" (dict ...)),
"wave" (a stage of facepipe.syncWave) and "annotations" (the object's own) optional. Later ones win:
commonAnnotations, then the sync wave (only with argocd.syncWaves.enabled), then the object's own.
*/}}
{{- define "facepipe.annotations" -}}
{{- $wave := dict -}}
{{- if and .wave .ctx.Values.argocd.syncWaves.enabled -}}
{{- $wave = dict "argocd.argoproj.io/sync-wave" (include "facepipe.syncWave" .wave) -}}
{{- end -}}
{{- with mergeOverwrite (dict) (.ctx.Values.commonAnnotations | default dict) $wave (.annotations | default dict) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Argo CD sync wave of a stage (argocd/README.md, "Sync waves"), as the annotation's string: the
broker "-1" (first: everything a broker's pod needs), the camera "1" (last: after the forwarder's
persistent session on the edge broker exists), everything else 0. Each chart's _helpers.tpl says
which of its objects are in which wave.
*/}}
{{- define "facepipe.syncWave" -}}
{{- $waves := dict "broker" "-1" "camera" "1" -}}
{{- if not (hasKey $waves .) -}}
{{- fail (printf "facepipe.syncWave: unknown stage %q" .) -}}
{{- end -}}
{{- get $waves . -}}
{{- end -}}
