{{/* vim: set filetype=mustache: */}}
{{/*
Names. A chart using this library says in Chart.yaml how long its full name may be
(annotation facepipe/fullname-max-length; default 52): the longest name it derives from it must
still fit 63 characters.
*/}}

{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "facepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "facepipe.fullname" -}}
{{- $max := index (.Chart.Annotations | default dict) "facepipe/fullname-max-length" | default "52" | int -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc $max | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc $max | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc $max | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: facepipe.component.fullname (dict "ctx" $ "component" "camera"). */}}
{{- define "facepipe.component.fullname" -}}
{{- printf "%s-%s" (include "facepipe.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facepipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facepipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "facepipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart's broker's in-cluster address: its Service name. */}}
{{- define "facepipe.broker.host" -}}
{{- include "facepipe.component.fullname" (dict "ctx" . "component" "broker") -}}
{{- end -}}
