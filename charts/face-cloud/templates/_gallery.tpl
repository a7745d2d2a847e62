{{/* The gallery's helpers (gallery-*.yaml, tests/test-gallery.yaml). */}}

{{- define "face-cloud.gallery.fullname" -}}
{{- include "facepipe.component.fullname" (dict "ctx" . "component" "gallery") -}}
{{- end -}}

{{/* Secret with the users file (key users) and the session key (key session-secret). */}}
{{- define "face-cloud.gallery.secretName" -}}
{{- default (include "face-cloud.gallery.fullname" .) .Values.gallery.auth.existingSecret -}}
{{- end -}}

{{/* The gallery's S3 keys: its own Secret, else the processor's (chart-made or existing), else the AWS chain. */}}
{{- define "face-cloud.gallery.s3.secretName" -}}
{{- default (include "face-cloud.s3.secretName" .) .Values.gallery.store.s3.credentials.existingSecret -}}
{{- end -}}

{{- define "face-cloud.gallery.s3.credentials" -}}
{{- if and (eq .Values.processor.store.type "s3") (or .Values.gallery.store.s3.credentials.existingSecret (include "face-cloud.s3.credentials" .)) -}}true{{- end -}}
{{- end -}}

{{/* The helm test's gallery user gets a random token: the test pod reads it, the users file holds its SHA-256. */}}
{{- define "face-cloud.gallery.probeUser" -}}
{{- if and .Values.tests.enabled (not .Values.gallery.auth.existingSecret) -}}{{ .Values.tests.galleryUser }}{{- end -}}
{{- end -}}

{{/*
A value of the chart-made gallery Secret: the one already in the cluster (helm upgrade), else a new
random one, drawn once per render (.Values._generated) so the checksum hashes the rendered Secret.
(dict "ctx" $ "key" "session-secret")
*/}}
{{- define "face-cloud.gallery.generated" -}}
{{- include "face-cloud.generated" .ctx -}}
{{- $cache := .ctx.Values._generated -}}
{{- $key := printf "gallery/%s" .key -}}
{{- if not (hasKey $cache $key) -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace (include "face-cloud.gallery.secretName" .ctx) -}}
{{- $current := dig "data" .key "" ($secret | default dict) -}}
{{- $_ := set $cache $key (ternary ($current | b64dec) (randAlphaNum 40) (ne $current "")) -}}
{{- end -}}
{{- index $cache $key -}}
{{- end -}}

{{/* The users file of the chart-made Secret. */}}
{{- define "face-cloud.gallery.users" -}}
{{- range .Values.gallery.auth.users }}
{{ .name }}:{{ .role }}:{{ .passwordHash }}
{{- end }}
{{- with (include "face-cloud.gallery.probeUser" .) }}
{{ . }}:viewer:sha256${{ include "face-cloud.gallery.generated" (dict "ctx" $ "key" "probe-token") | sha256sum }}
{{- end }}
{{- end -}}

{{/* What contradicts in the gallery's values, as a JSON list of problems (face-cloud.validate reports them with the rest). */}}
{{- define "face-cloud.gallery.problems" -}}
{{- $problems := list -}}
{{- $g := .Values.gallery -}}
{{- if $g.enabled -}}
{{- if and $g.auth.proxy.enabled (not $g.auth.proxy.from) -}}
{{- $problems = append $problems "gallery.auth.proxy.enabled needs gallery.auth.proxy.from: the NetworkPolicy peers of the auth proxy, the only pods that may reach the port where the trusted header is believed." -}}
{{- end -}}
{{- if and $g.auth.proxy.enabled (not .Values.networkPolicy.enabled) -}}
{{- $problems = append $problems "gallery.auth.proxy.enabled needs networkPolicy.enabled: without it any pod could send the trusted header." -}}
{{- end -}}
{{- if and $g.auth.existingSecret $g.auth.users -}}
{{- $problems = append $problems "gallery.auth.users is ignored with gallery.auth.existingSecret: put the users file into that Secret (key users) instead." -}}
{{- end -}}
{{- if and (not $g.auth.existingSecret) (not $g.auth.users) (not $g.auth.proxy.enabled) (eq $g.auth.anonymous "none") -}}
{{- $problems = append $problems "the gallery would let nobody in: set gallery.auth.users (hashes from `facepipe hash-password`), gallery.auth.existingSecret, gallery.auth.proxy.enabled or gallery.auth.anonymous." -}}
{{- end -}}
{{- if eq (int $g.auth.proxy.port) (int $g.port) -}}
{{- $problems = append $problems "gallery.auth.proxy.port must differ from gallery.port." -}}
{{- end -}}
{{- if has (int .Values.httpPort) (list (int $g.port) (int $g.auth.proxy.port)) -}}
{{- $problems = append $problems "gallery.port and gallery.auth.proxy.port must differ from httpPort (/healthz /readyz /metrics)." -}}
{{- end -}}
{{- end -}}
{{- toJson $problems -}}
{{- end -}}
