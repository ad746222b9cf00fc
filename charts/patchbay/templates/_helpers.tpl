{{/* Chart name, at most 63 characters. */}}
{{- define "patchbay.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "patchbay.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "patchbay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "patchbay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "patchbay.labels" -}}
{{ include "patchbay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: patchbay
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "patchbay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "patchbay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "patchbay.subject" -}}
- kind: ServiceAccount
  name: {{ include "patchbay.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "patchbay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
RBAC rules for what the operator does inside a watched namespace, each verb
matched to a call it makes: kopf lists and watches Connections, Connectors and
Secrets; the reconciler reads Connectors and credential Secrets, labels
Connections, patches status, server-side applies binding Secrets (create on
first apply, patch after) and posts Events. Binding Secrets are removed by the
garbage collector through their ownerReference, so there is no delete verb.
*/}}
{{- define "patchbay.namespacedRules" -}}
- apiGroups: [patchbay.dev]
  resources: [connections]
  verbs: [list, watch, patch]
- apiGroups: [patchbay.dev]
  resources: [connections/status]
  verbs: [patch]
- apiGroups: [patchbay.dev]
  resources: [connectors]
  verbs: [get, list, watch]
- apiGroups: [patchbay.dev]
  resources: [connectors/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end -}}

{{/*
RBAC rules for cluster-scoped objects: ClusterConnectors, and the
CustomResourceDefinitions kopf watches so that CRDs installed after the
operator started are still served. With a list of namespaces kopf also
watches Namespaces to notice when a listed one is created.
*/}}
{{- define "patchbay.clusterRules" -}}
- apiGroups: [patchbay.dev]
  resources: [clusterconnectors]
  verbs: [get, list, watch]
- apiGroups: [patchbay.dev]
  resources: [clusterconnectors/status]
  verbs: [patch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- else if .Values.peering.enabled }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end -}}
