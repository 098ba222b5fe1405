{{/* The controller's name: its Deployment, Service, ServiceAccount and RBAC objects. */}}
{{- define "amber.fullname" -}}
{{- default "amber-controller" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "amber.labels" -}}
app.kubernetes.io/name: amber
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selects the controller's pods (the NetworkPolicy's source too). */}}
{{- define "amber.selectorLabels" -}}
app.kubernetes.io/name: amber
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "amber.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "amber.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "amber.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "amber.sidecarImage" -}}
{{- default (include "amber.image" .) .Values.sidecar.image -}}
{{- end -}}

{{/* The namespace of a database entry: its own, else the release's. */}}
{{- define "amber.dbNamespace" -}}
{{- default .root.Release.Namespace .db.namespace -}}
{{- end -}}

{{/* Every namespace a database is declared in, plus networkPolicy.extraNamespaces, sorted, once each. */}}
{{- define "amber.databaseNamespaces" -}}
{{- $ns := list -}}
{{- range $name, $db := .Values.databases -}}
{{- $ns = append $ns (default $.Release.Namespace $db.namespace) -}}
{{- end -}}
{{- range .Values.networkPolicy.extraNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | join "," -}}
{{- end -}}

{{/* Seconds in a duration of one number and one unit (s, m, h, d), e.g. 15m -> 900. */}}
{{- define "amber.seconds" -}}
{{- $d := toString . -}}
{{- $n := regexFind "^[0-9]+" $d | int64 -}}
{{- $u := trimPrefix (regexFind "^[0-9]+" $d) $d -}}
{{- if eq $u "s" -}}{{ $n }}
{{- else if eq $u "m" -}}{{ mul $n 60 }}
{{- else if eq $u "h" -}}{{ mul $n 3600 }}
{{- else if eq $u "d" -}}{{ mul $n 86400 }}
{{- else -}}{{ fail (printf "duration %q: use a number and one unit of s, m, h, d" $d) }}
{{- end -}}
{{- end -}}

{{- /*
Seconds between two runs of a schedule, for the shapes that say it plainly:
@hourly, @daily, @weekly; "M *|N * * *" (every N hours, written with a slash
in place of the bar), "M H * * *" (a day), "*|N * * * *" (N minutes),
"M * * * *" (an hour), "M H * * D" (a week). Empty for anything else (the
caller falls back to alerts.backupInterval).
*/ -}}
{{- define "amber.scheduleSeconds" -}}
{{- $s := . | default "" | trim -}}
{{- if eq $s "@hourly" -}}3600
{{- else if or (eq $s "@daily") (eq $s "@midnight") -}}86400
{{- else if eq $s "@weekly" -}}604800
{{- else if regexMatch "^[0-9]+ \\*/[0-9]+ \\* \\* \\*$" $s -}}{{ mul (regexFind "[0-9]+ \\*" (regexFind "\\*/[0-9]+ \\*" $s) | trimSuffix " *" | int64) 3600 }}
{{- else if regexMatch "^[0-9]+ [0-9]+ \\* \\* \\*$" $s -}}86400
{{- else if regexMatch "^\\*/[0-9]+ \\* \\* \\* \\*$" $s -}}{{ mul (regexFind "[0-9]+" $s | int64) 60 }}
{{- else if regexMatch "^[0-9]+ \\* \\* \\* \\*$" $s -}}3600
{{- else if regexMatch "^[0-9]+ [0-9]+ \\* \\* [0-9A-Za-z]+$" $s -}}604800
{{- end -}}
{{- end -}}
