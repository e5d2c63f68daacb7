{{/* Names, labels and small shared pieces of the usina chart. */}}

{{- define "usina.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "usina.fullname" -}}
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

{{- define "usina.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; `component` names the part (server, serving, rbac, ...). */}}
{{- define "usina.labels" -}}
helm.sh/chart: {{ include "usina.chart" .root }}
{{ include "usina.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: usina
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "usina.selectorLabels" -}}
app.kubernetes.io/name: {{ include "usina.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .endpoint }}
usina.dev/endpoint: {{ . }}
{{- end }}
{{- end }}

{{/* An image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "usina.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "usina.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "usina.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the database URL / MLflow URI ("" when neither is configured). */}}
{{- define "usina.databaseSecret" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.url }}
{{- printf "%s-database" (include "usina.fullname" .) }}
{{- end }}
{{- end }}

{{- define "usina.mlflowSecret" -}}
{{- if .Values.mlflow.existingSecret }}
{{- .Values.mlflow.existingSecret }}
{{- else if .Values.mlflow.trackingUri }}
{{- printf "%s-mlflow" (include "usina.fullname" .) }}
{{- end }}
{{- end }}

{{/* MLFLOW_TRACKING_URI from its Secret, when one is configured. */}}
{{- define "usina.mlflowEnv" -}}
{{- $secret := include "usina.mlflowSecret" . }}
{{- if $secret }}
- name: MLFLOW_TRACKING_URI
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.mlflow.secretKey }}
{{- end }}
{{- end }}

{{/* The namespaces whose Jobs the server manages. */}}
{{- define "usina.managedNamespaces" -}}
{{- if .Values.rbac.namespaces }}
{{- toJson .Values.rbac.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
The permissions of usina's Kubernetes backend (src/usina/backends/kubernetes): Jobs are
created, listed and watched (an informer), and deleted (cancel, a failed attempt); Pods are
listed and watched; pod logs are read; a distributed step's headless Service is created,
listed (clean-up of leftovers) and deleted. tests/deploy checks these rules against the calls
the backend makes. Nothing else: no Secrets, no get, no update/patch.
*/}}
{{- define "usina.rbacRules" -}}
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "delete", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "delete", "list"]
{{- end }}
