{{/* Chart name, overridable. */}}
{{- define "nodeagent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, or "<release>-<chart>" when it lacks the chart name. */}}
{{- define "nodeagent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the agent pods. Never change them: a DaemonSet's selector is immutable. */}}
{{- define "nodeagent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodeagent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "nodeagent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nodeagent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nodeagent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nodeagent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nodeagent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "nodeagent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True ("true") when the rollout surges, i.e. old and new agent pods overlap on a node. */}}
{{- define "nodeagent.surges" -}}
{{- $s := toString .Values.updateStrategy.maxSurge }}
{{- if and (ne $s "0") (ne $s "0%") (ne $s "") }}true{{ end }}
{{- end }}

{{/* Relabelings shared by the ServiceMonitor and the PodMonitor: the node name as label "node". */}}
{{- define "nodeagent.nodeRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
{{- end }}

{{/* The agent's config file: .Values.config, or the chart's commented default. */}}
{{- define "nodeagent.config" -}}
{{- $config := .Values.config | default (.Files.Get "files/config.yaml") }}
{{- if not $config }}
{{- fail "files/config.yaml is missing from the chart and .Values.config is empty" }}
{{- end }}
{{- $config }}
{{- end }}

{{/* The features the agent knows, in its start order (cmd/nodeagent/features.go). */}}
{{- define "nodeagent.features" -}}
{{- toJson (list "raid" "dnscache" "imagewarm" "interrupt" "conntrack") }}
{{- end }}

{{/*
One feature's config section as JSON ({} when the section is missing):
  include "nodeagent.featureConfig" (list . "dnscache") | fromJson
The chart reads the config it ships so that the pod gets only the privileges
of the features that config enables.
*/}}
{{- define "nodeagent.featureConfig" -}}
{{- $ctx := index . 0 }}
{{- $name := index . 1 }}
{{- $cfg := include "nodeagent.config" $ctx | fromYaml }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config: not a YAML mapping of feature sections: %s" $cfg.Error) }}
{{- end }}
{{- $sec := get $cfg $name | default dict }}
{{- if not (kindIs "map" $sec) }}
{{- fail (printf "config: section %s must be a mapping, not %v" $name $sec) }}
{{- end }}
{{- toJson $sec }}
{{- end }}

{{/*
"true" when a feature's privileges are granted, else "": its config section
says enabled: true, or the feature is listed in keepPrivileges.
  {{- if include "nodeagent.featureEnabled" (list . "dnscache") }}
*/}}
{{- define "nodeagent.featureEnabled" -}}
{{- $ctx := index . 0 }}
{{- $name := index . 1 }}
{{- $known := include "nodeagent.features" $ctx | fromJsonArray }}
{{- if not (has $name $known) }}
{{- fail (printf "nodeagent.featureEnabled: unknown feature %q (known: %s)" $name (join ", " $known)) }}
{{- end }}
{{- range $ctx.Values.keepPrivileges }}
{{- if not (has . $known) }}
{{- fail (printf "keepPrivileges: unknown feature %q (known: %s)" . (join ", " $known)) }}
{{- end }}
{{- end }}
{{- $enabled := get (include "nodeagent.featureConfig" . | fromJson) "enabled" | default false }}
{{- if not (kindIs "bool" $enabled) }}
{{- fail (printf "config: %s.enabled must be true or false, not %q" $name (toString $enabled)) }}
{{- end }}
{{- if or $enabled (has $name $ctx.Values.keepPrivileges) }}true{{ end }}
{{- end }}

{{/* The enabled features as a JSON object name -> "true" or "": include "nodeagent.enabled" . | fromJson */}}
{{- define "nodeagent.enabled" -}}
{{- $on := dict }}
{{- range include "nodeagent.features" . | fromJsonArray }}
{{- $_ := set $on . (include "nodeagent.featureEnabled" (list $ .)) }}
{{- end }}
{{- toJson $on }}
{{- end }}
