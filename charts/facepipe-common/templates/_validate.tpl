{{/*
Validation that reports every problem at once. A chart's validate template collects what is wrong
with its values into a list, then hands it over:
  {{- $problems := list -}}
  {{- if not .Values.cloud.host -}}{{- $problems = append $problems "cloud.host is required: ..." -}}{{- end -}}
  {{- include "facepipe.validate" (dict "ctx" . "problems" $problems) -}}
One problem fails as "<chart>: <problem>"; several as one numbered list, so a user fixes them in one go.
*/}}
{{- define "facepipe.validate" -}}
{{- $chart := .ctx.Chart.Name -}}
{{- if eq (len .problems) 1 -}}
{{- fail (printf "\n\n%s: %s\n" $chart (first .problems)) -}}
{{- else if .problems -}}
{{- $lines := list -}}
{{- range $i, $problem := .problems -}}
{{- $lines = append $lines (printf "%d. %s" (add1 $i) $problem) -}}
{{- end -}}
{{- fail (printf "\n\n%s: %d problems with the values:\n\n%s\n" $chart (len .problems) (join "\n\n" $lines)) -}}
{{- end -}}
{{- end -}}

{{/* A Kubernetes quantity ("2Gi", "500M", "1.5e9") in bytes, as an integer. */}}
{{- define "facepipe.bytes" -}}
{{- $q := toString . -}}
{{- $number := regexFind "^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?" $q -}}
{{- $suffix := trimPrefix $number $q -}}
{{- $factors := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 1e-3 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- if not (hasKey $factors $suffix) -}}
{{- fail (printf "\n\n%q is not a Kubernetes quantity.\n" $q) -}}
{{- end -}}
{{- mulf (float64 $number) (get $factors $suffix) | floor | int64 -}}
{{- end -}}
