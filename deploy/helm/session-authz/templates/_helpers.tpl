{{/* The objects' base name: the release's name if it holds the chart's, else both. */}}
{{- define "session-authz.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What selects the Pods: this chart, this release. */}}
{{- define "session-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "session-authz.labels" -}}
{{ include "session-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "session-authz.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The Pod's hardening, the same in both modes. */}}
{{- define "session-authz.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A container's hardening; the argument is its numeric user. */}}
{{- define "session-authz.containerSecurityContext" -}}
runAsUser: {{ . }}
runAsGroup: {{ . }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "session-authz.preStop" -}}
preStop:
  sleep:
    seconds: {{ . }}
{{- end -}}

{{/* host:port on the bind address. */}}
{{- define "session-authz.addr" -}}
{{ index . 0 }}:{{ index . 1 }}
{{- end -}}

{{/*
The TOML file. Values are written with toJson: a JSON string, boolean, integer or list of them is
also TOML. Integers are cast, as YAML numbers reach templates as floats.
*/}}
{{- define "session-authz.toml" -}}
{{- $c := .Values.config -}}
grpc_addr = {{ include "session-authz.addr" (list $c.bindAddress $c.grpcPort) | toJson }}
http_addr = {{ include "session-authz.addr" (list $c.bindAddress $c.opsPort) | toJson }}
{{- if $c.forwardAuth.enabled }}
forward_auth_addr = {{ include "session-authz.addr" (list $c.bindAddress $c.forwardAuth.port) | toJson }}
forward_auth_path_prefix = {{ $c.forwardAuth.pathPrefix | toJson }}
{{- end }}
log_format = {{ $c.logFormat | toJson }}
validator_timeout = {{ $c.validatorTimeout | toJson }}
on_validator_error = {{ $c.onValidatorError | toJson }}
drain_delay = {{ $c.drainDelay | toJson }}
shutdown_grace = {{ $c.shutdownGrace | toJson }}
cache_ttl = {{ $c.cacheTtl | toJson }}
cache_negative_ttl = {{ $c.cacheNegativeTtl | toJson }}
cache_max_entries = {{ int64 $c.cacheMaxEntries }}
{{- if .Values.tls.enabled }}
tls_cert = "/etc/session-authz-tls/{{ .Values.tls.certKey }}"
tls_key = "/etc/session-authz-tls/{{ .Values.tls.keyKey }}"
{{- if .Values.tls.clientCaKey }}
tls_client_ca = "/etc/session-authz-tls/{{ .Values.tls.clientCaKey }}"
{{- end }}
{{- end }}
{{- range $key, $value := $c.extra }}
{{- if has $key (list "grpc_addr" "http_addr" "forward_auth_addr" "forward_auth_path_prefix" "log_format" "validator_timeout" "on_validator_error" "drain_delay" "shutdown_grace" "cache_ttl" "cache_negative_ttl" "cache_max_entries" "tls_cert" "tls_key" "tls_client_ca" "routes") }}
{{- fail (printf "config.extra.%s: the chart writes %s itself; use its own value" $key $key) }}
{{- end }}
{{ $key }} = {{ include "session-authz.tomlValue" $value }}
{{- end }}
{{- range .Values.routes }}

[[routes]]
prefix = {{ required "every route needs a prefix" .prefix | toJson }}
{{- range $key, $value := omit . "prefix" }}
{{ $key }} = {{ include "session-authz.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "session-authz.tomlValue" -}}
{{- if kindIs "float64" . -}}
{{ int64 . }}
{{- else -}}
{{ toJson . }}
{{- end -}}
{{- end -}}

{{/* The mode, checked; and what mode sidecar cannot take. */}}
{{- define "session-authz.mode" -}}
{{- if not (has .Values.mode (list "standalone" "sidecar")) -}}
{{- fail (printf "mode must be standalone or sidecar, not %v" .Values.mode) -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") .Values.routes -}}
{{- fail "mode sidecar: per-route rules are Envoy's context_extensions there (files/envoy-sidecar.yaml); set routes: []" -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") .Values.tls.enabled -}}
{{- fail "mode sidecar: Envoy reaches session-authz on loopback; leave tls.enabled false" -}}
{{- end -}}
{{- .Values.mode -}}
{{- end -}}

{{/* Mode sidecar: the dashboard's labels. */}}
{{- define "session-authz.sidecarSelectorLabels" -}}
app.kubernetes.io/name: {{ .Values.sidecar.name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "session-authz.sidecarLabels" -}}
{{ include "session-authz.sidecarSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
