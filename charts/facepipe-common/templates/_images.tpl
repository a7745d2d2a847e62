{{/* An image reference from an image dict: facepipe.imageRef (dict "image" .Values.image "default" .Chart.AppVersion). */}}
{{- define "facepipe.imageRef" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .default .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The facepipe application image (tag: the chart's appVersion). */}}
{{- define "facepipe.image" -}}
{{- include "facepipe.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* The Mosquitto image of the chart's broker. */}}
{{- define "facepipe.broker.image" -}}
{{- include "facepipe.imageRef" (dict "image" .Values.broker.image "default" "2.0.22") -}}
{{- end -}}
