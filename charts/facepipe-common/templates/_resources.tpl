{{/* The chart's ServiceAccount (serviceAccount.create), in the broker's sync wave. */}}
{{- define "facepipe.serviceAccount" -}}
{{- if .Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "facepipe.serviceAccountName" . }}
  namespace: {{ .Release.Namespace | quote }}
  labels:
    {{- include "facepipe.labels" (dict "ctx" . "component" "") | nindent 4 }}
  {{- with (include "facepipe.annotations" (dict "ctx" . "wave" "broker" "annotations" .Values.serviceAccount.annotations) | trim) }}{{- . | nindent 2 }}{{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- end }}
{{- end -}}

{{/* The broker's persistence claim (broker.persistence, unless an existing claim is named). */}}
{{- define "facepipe.broker.pvc" -}}
{{- if and .Values.broker.persistence.enabled (not .Values.broker.persistence.existingClaim) }}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "facepipe.component.fullname" (dict "ctx" . "component" "broker") }}
  namespace: {{ .Release.Namespace | quote }}
  labels:
    {{- include "facepipe.labels" (dict "ctx" . "component" "broker") | nindent 4 }}
  {{- with (include "facepipe.annotations" (dict "ctx" . "wave" "broker") | trim) }}{{- . | nindent 2 }}{{- end }}
spec:
  accessModes:
    {{- toYaml .Values.broker.persistence.accessModes | nindent 4 }}
  {{- with .Values.broker.persistence.storageClass }}
  storageClassName: {{ if eq . "-" }}""{{ else }}{{ . | quote }}{{ end }}
  {{- end }}
  resources:
    requests:
      storage: {{ .Values.broker.persistence.size | quote }}
{{- end }}
{{- end -}}
