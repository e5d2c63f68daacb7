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
{{/*
The options of one project's Jobs (usina.compose.projects.ProjectBackend.options), as JSON:
the `jobs` values (or a project's entry laid over them) with the backend's option names.
Arguments: root, v (the values).
*/}}
{{- define "usina.jobOptions" -}}
{{- $v := .v -}}
{{- $root := .root -}}
{{- $o := dict "namespace" (default $root.Release.Namespace $v.namespace) -}}
{{- with $v.queue }}{{- $_ := set $o "queue" . }}{{- end }}
{{- $_ := set $o "image" (default (include "usina.image" (dict "root" $root "image" $root.Values.images.runtime)) $v.image) -}}
{{- with $v.serviceAccount }}{{- $_ := set $o "service_account" . }}{{- end }}
{{- with $v.priorityClassName }}{{- $_ := set $o "priority_class" . }}{{- end }}
{{- with $v.imagePullSecrets }}{{- $_ := set $o "image_pull_secrets" . }}{{- end }}
{{- with $v.env }}{{- $_ := set $o "env" . }}{{- end }}
{{- with $v.secretEnv }}{{- $_ := set $o "secret_env" . }}{{- end }}
{{- $secrets := list -}}
{{- range $v.envFromSecrets }}{{- $secrets = append $secrets . }}{{- end }}
{{- with $root.Values.objectStore.existingSecret }}
{{- if not (has . $secrets) }}{{- $secrets = append $secrets . }}{{- end }}
{{- end }}
{{- with $secrets }}{{- $_ := set $o "env_from_secrets" . }}{{- end }}
{{- with $v.envFromConfigMaps }}{{- $_ := set $o "env_from_config_maps" . }}{{- end }}
{{- with $v.nodeSelector }}{{- $_ := set $o "node_selector" . }}{{- end }}
{{- with $v.tolerations }}{{- $_ := set $o "tolerations" . }}{{- end }}
{{- toJson $o -}}
{{- end }}

{{/*
The server's backend config (`usina server --backend-config`): the default backend and its
options, and each project's own. A project's entry is laid over the `jobs` defaults.
*/}}
{{- define "usina.backendConfig" -}}
{{- $root := . -}}
{{- $defaults := omit .Values.jobs "projects" -}}
{{- $projects := dict -}}
{{- range $name, $p := .Values.jobs.projects }}
{{- $merged := merge (deepCopy (default dict $p)) (deepCopy $defaults) -}}
{{- $_ := set $projects $name (dict "backend" $merged.backend "options" (include "usina.jobOptions" (dict "root" $root "v" $merged) | fromJson)) -}}
{{- end }}
{{- $config := dict "backend" .Values.jobs.backend "options" (include "usina.jobOptions" (dict "root" $root "v" $defaults) | fromJson) "projects" $projects -}}
{{- toJson $config -}}
{{- end }}

{{/*
The namespaces the server runs Jobs in, as a JSON object: namespace -> whether a Kueue queue
is used there (the backend then reads Workloads). Those of every project whose backend is
kubernetes (and of the default, when it is); rbac.namespaces, when set, replaces the list.
*/}}
{{- define "usina.jobNamespaces" -}}
{{- $config := include "usina.backendConfig" . | fromJson -}}
{{- $found := dict -}}
{{- $choices := list $config -}}
{{- range $name, $p := $config.projects }}{{- $choices = append $choices $p }}{{- end }}
{{- range $choices }}
{{- if eq .backend "kubernetes" }}
{{- $ns := .options.namespace -}}
{{- $queued := or (hasKey .options "queue") (get $found $ns | default false) -}}
{{- $_ := set $found $ns $queued -}}
{{- end }}
{{- end }}
{{- if $.Values.rbac.namespaces }}
{{- $any := false -}}
{{- range $ns, $q := $found }}{{- if $q }}{{- $any = true }}{{- end }}{{- end }}
{{- $found = dict -}}
{{- range $.Values.rbac.namespaces }}{{- $_ := set $found . $any }}{{- end }}
{{- end }}
{{- toJson $found -}}
{{- end }}

{{/*
Whether any project's steps run as Jobs (then the chart needs an object store).
*/}}
{{- define "usina.runsJobs" -}}
{{- $config := include "usina.backendConfig" . | fromJson -}}
{{- $jobs := eq $config.backend "kubernetes" -}}
{{- range $name, $p := $config.projects }}{{- if eq $p.backend "kubernetes" }}{{- $jobs = true }}{{- end }}{{- end }}
{{- if $jobs }}true{{- end }}
{{- end }}

{{/*
The permissions of usina's Kubernetes backend (src/usina/backends/kubernetes): Jobs are
created, listed and watched (an informer), and deleted (cancel, a failed attempt); Pods are
listed and watched; pod logs are read; a distributed step's headless Service is created,
patched (its Job becomes its owner), listed (clean-up of leftovers) and deleted; with a Kueue
queue, Workloads are listed (where admission stands, evictions). tests/deploy checks these
rules against the calls the backend makes. Nothing else: no Secrets, no get, no update.
Argument: root, queued (whether a Kueue queue is used in the namespace).
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
  verbs: ["create", "delete", "list", "patch"]
{{- if .queued }}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
{{- end }}
{{- end }}
