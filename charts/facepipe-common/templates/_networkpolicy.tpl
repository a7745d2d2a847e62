{{/*
Egress NetworkPolicies: a release-wide default deny, then one policy per workload naming what it
may reach. (dict "ctx" $ "component" "camera" "rules" (list ...rule dicts...)); rules are
NetworkPolicyEgressRule objects. The helpers below make the common ones.
*/}}
{{- define "facepipe.networkPolicy.egress" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ printf "%s-%s-egress" (include "facepipe.fullname" .ctx) .component }}
  namespace: {{ .ctx.Release.Namespace | quote }}
  labels:
    {{- include "facepipe.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  {{- with (include "facepipe.annotations" (dict "ctx" .ctx "wave" "broker") | trim) }}{{- . | nindent 2 }}{{- end }}
spec:
  podSelector:
    matchLabels:
      {{- include "facepipe.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
  policyTypes:
    - Egress
  {{- if .rules }}
  egress:
    {{- toYaml .rules | nindent 4 }}
  {{- else }}
  egress: []
  {{- end }}
{{- end -}}

{{/* Every pod of the release: no ingress and no egress but what another policy allows. */}}
{{- define "facepipe.networkPolicy.defaultDeny" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "facepipe.fullname" . }}-default-deny
  namespace: {{ .Release.Namespace | quote }}
  labels:
    {{- include "facepipe.labels" (dict "ctx" . "component" "") | nindent 4 }}
  {{- with (include "facepipe.annotations" (dict "ctx" . "wave" "broker") | trim) }}{{- . | nindent 2 }}{{- end }}
spec:
  podSelector:
    matchLabels:
      {{- include "facepipe.selectorLabels" (dict "ctx" . "component" "") | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
{{- end -}}

{{/* Rule: name resolution (port 53, UDP and TCP) to networkPolicy.dnsTo (empty: anywhere). As JSON. */}}
{{- define "facepipe.networkPolicy.dnsRule" -}}
{{- $rule := dict "ports" (list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP")) -}}
{{- with .Values.networkPolicy.dnsTo }}{{- $_ := set $rule "to" . -}}{{- end -}}
{{- toJson $rule -}}
{{- end -}}

{{/* Rule: this release's pods of one component, on one named port. (dict "ctx" $ "component" "broker" "port" "mqtt"). As JSON. */}}
{{- define "facepipe.networkPolicy.podRule" -}}
{{- $selector := include "facepipe.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml -}}
{{- toJson (dict "to" (list (dict "podSelector" (dict "matchLabels" $selector))) "ports" (list (dict "port" .port "protocol" "TCP"))) -}}
{{- end -}}

{{/* Rule: peers outside the release (empty `to`: anywhere) on a TCP port (0: every port and protocol). (dict "to" list "port" 443). As JSON. */}}
{{- define "facepipe.networkPolicy.peerRule" -}}
{{- $rule := dict -}}
{{- with .to }}{{- $_ := set $rule "to" . -}}{{- end -}}
{{- if .port }}{{- $_ := set $rule "ports" (list (dict "port" (int .port) "protocol" "TCP")) -}}{{- end -}}
{{- toJson $rule -}}
{{- end -}}

{{/* The TCP port of a URL: its own, else its scheme's (rtsp 554, http 80, https 443). */}}
{{- define "facepipe.urlPort" -}}
{{- $url := urlParse . -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- if gt (len $hostPort) 1 -}}{{- last $hostPort -}}{{- else -}}{{- get (dict "rtsp" "554" "rtsps" "322" "http" "80" "https" "443") $url.scheme | default "443" -}}{{- end -}}
{{- end -}}
