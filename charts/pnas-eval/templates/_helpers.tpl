{{/* The chart name, or nameOverride. */}}
{{- define "pnas-eval.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: fullnameOverride, else <release>-<chart> (only <release> when it
already contains the chart name). Truncated so that suffixes such as "-operator" still fit in 63.
*/}}
{{- define "pnas-eval.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pnas-eval.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "pnas-eval.labels" -}}
helm.sh/chart: {{ include "pnas-eval.chart" . }}
{{ include "pnas-eval.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pnas-eval
{{- end }}

{{/* Selector labels; each workload adds app.kubernetes.io/component to keep them apart. */}}
{{- define "pnas-eval.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pnas-eval.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "pnas-eval.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "pnas-eval.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Jobs' ServiceAccount; empty: the namespace's default account. */}}
{{- define "pnas-eval.jobsServiceAccountName" -}}
{{- if .Values.jobs.serviceAccount.create }}
{{- default (printf "%s-jobs" (include "pnas-eval.fullname" .)) .Values.jobs.serviceAccount.name }}
{{- else }}
{{- .Values.jobs.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The watched namespace: watchNamespace when set (empty: every namespace), else the release
namespace. Helm drops null values, so an unset watchNamespace is a missing key.
*/}}
{{- define "pnas-eval.watchNamespace" -}}
{{- if hasKey .Values "watchNamespace" }}
{{- .Values.watchNamespace }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* "true" when the operator watches every namespace. */}}
{{- define "pnas-eval.clusterWide" -}}
{{- if not (include "pnas-eval.watchNamespace" .) }}true{{ end }}
{{- end }}

{{/* The namespaces where Jobs run and need their ServiceAccount (a JSON list). */}}
{{- define "pnas-eval.jobsNamespaces" -}}
{{- if .Values.jobs.serviceAccount.namespaces }}
{{- toJson .Values.jobs.serviceAccount.namespaces }}
{{- else }}
{{- toJson (list (default .Release.Namespace (include "pnas-eval.watchNamespace" .))) }}
{{- end }}
{{- end }}

{{/* Prefix of cluster-scoped names: one install per namespace must not collide with another. */}}
{{- define "pnas-eval.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "pnas-eval.fullname" .) }}
{{- end }}

{{/* "repository:tag" of an image value. */}}
{{- define "pnas-eval.image" -}}
{{- printf "%s:%s" .repository .tag }}
{{- end }}

{{/* The Secret holding MinIO's credentials. */}}
{{- define "pnas-eval.minioSecretName" -}}
{{- default .Values.minio.credentials.secretName .Values.minio.credentials.existingSecret }}
{{- end }}

{{/* Restricted pod and container security contexts (Pod Security Standard "restricted"). */}}
{{- define "pnas-eval.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "pnas-eval.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
