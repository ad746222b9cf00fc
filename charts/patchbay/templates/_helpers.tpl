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
  verbs: [get, list, watch, create, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
{{ include "patchbay.peeringRules" (dict "resource" "kopfpeerings" "name" .Values.peering.name) }}
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
{{ include "patchbay.peeringRules" (dict "resource" "clusterkopfpeerings" "name" .Values.peering.name) }}
{{- end }}
{{- end -}}

{{/*
kopf peering: every replica watches the peering objects to learn about the others
and writes its keep-alive into the status of the one named by peering.name (the
CRD has no status subresource, so that is a patch of the object); patchbay reads
that one to run its workers only on the working replica. It never creates or
deletes one: the chart does. Called with (dict "resource" <plural> "name" <name>).
*/}}
{{- define "patchbay.peeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  resourceNames: [{{ .name }}]
  verbs: [get, patch]
{{- end -}}

{{- define "patchbay.admissionKeyName" -}}
{{- printf "%s-admission-key" (include "patchbay.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "patchbay.webhookServiceName" -}}
{{- printf "%s-webhook" (include "patchbay.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "patchbay.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "patchbay.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the Deployment mounts the webhook's serving certificate. */}}
{{- define "patchbay.webhookCertDir" -}}
/var/run/patchbay/webhook-tls
{{- end -}}

{{/*
The self-signed webhook certificate as YAML {ca, cert, key} (PEM): the one in
the release's Secret when it exists, so an upgrade keeps it, else a new CA and a
serving certificate for the webhook Service. Generated once per render and
shared by the Secret, the webhook configurations' caBundle and the Deployment's
checksum, which restarts the operator when the certificate changes.
*/}}
{{- define "patchbay.webhookTLS" -}}
{{- if not (hasKey .Values "__webhookTLS") -}}
{{- $stored := lookup "v1" "Secret" .Release.Namespace (include "patchbay.webhookSecretName" .) -}}
{{- $data := default (dict) (get (default (dict) $stored) "data") -}}
{{- $tls := dict -}}
{{- if and (get $data "ca.crt") (get $data "tls.crt") (get $data "tls.key") -}}
{{- $tls = dict "ca" (b64dec (get $data "ca.crt")) "cert" (b64dec (get $data "tls.crt")) "key" (b64dec (get $data "tls.key")) -}}
{{- else -}}
{{- $service := include "patchbay.webhookServiceName" . -}}
{{- $host := printf "%s.%s.svc" $service .Release.Namespace -}}
{{- $days := int .Values.webhook.selfSigned.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" (include "patchbay.fullname" .)) $days -}}
{{- $cert := genSignedCert $host nil (list $host (printf "%s.cluster.local" $host)) $days $ca -}}
{{- $tls = dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "__webhookTLS" $tls -}}
{{- end -}}
{{- toYaml (get .Values "__webhookTLS") -}}
{{- end -}}

{{/*
What both webhooks share: the Service, the Connection operations they judge,
and, with a list of watched namespaces, only those namespaces. Called with
(dict "root" $ "path" "<handler id>").
*/}}
{{- define "patchbay.webhookCommon" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ include "patchbay.webhookServiceName" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: /{{ .path }}
    port: 443
  {{- if not $root.Values.webhook.certManager.enabled }}
  caBundle: {{ (include "patchbay.webhookTLS" $root | fromYaml).ca | b64enc }}
  {{- end }}
rules:
  - apiGroups: [patchbay.dev]
    apiVersions: [v1alpha1]
    operations: [CREATE, UPDATE]
    resources: [connections]
{{- with $root.Values.watchNamespaces }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values:
        {{- toYaml . | nindent 8 }}
{{- end }}
sideEffects: None
admissionReviewVersions: [v1]
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
{{- end -}}

{{/* The metrics Service's labels: its component tells it apart from the webhook Service for the ServiceMonitor. */}}
{{- define "patchbay.metricsLabels" -}}
{{- merge (dict "app.kubernetes.io/component" "metrics") (include "patchbay.labels" . | fromYaml) | toYaml -}}
{{- end -}}

{{/* The CIDRs of one IP version, as YAML list items (an ipBlock's except must lie in its cidr). */}}
{{- define "patchbay.exceptOf" -}}
{{- range .cidrs }}
{{- if eq (contains ":" .) (eq $.version 6) }}
- {{ . }}
{{- end }}
{{- end }}
{{- end -}}
