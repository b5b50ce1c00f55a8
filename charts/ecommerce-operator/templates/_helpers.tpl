{{- define "ecommerce-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ecommerce-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecommerce-operator.labels" -}}
{{ include "ecommerce-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ecommerce-operator.serviceAccountName" -}}
{{- default (include "ecommerce-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
What the operator calls on stacks and their children: a ClusterRole, or a
Role in watchNamespace. The same rules as k8s/operator/10-rbac.yaml (the
packaging check compares them).
*/}}
{{- define "ecommerce-operator.rules" -}}
# Watch stacks; add and remove the finalizer (JSON patch).
- apiGroups: ["ecommerce.example.com"]
  resources: ["ecommercestacks"]
  verbs: ["get", "list", "watch", "patch"]
# Status by server-side apply.
- apiGroups: ["ecommerce.example.com"]
  resources: ["ecommercestacks/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need this on the owner.
- apiGroups: ["ecommerce.example.com"]
  resources: ["ecommercestacks/finalizers"]
  verbs: ["update"]
# Children by server-side apply (create on first apply), watched for drift.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# spec.monitoring: the PodMonitor and PrometheusRule by server-side apply.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors", "prometheusrules"]
  verbs: ["get", "create", "patch"]
# Migration Jobs: created once per version (a Job cannot change), read
# for their outcome; their pods are listed for a failure's cause.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# An autoscaler is deleted when its service's autoscaling is switched off.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The referenced Secrets are checked (exist, have the key) before applying;
# those the spec leaves out are generated into new Secrets. Never listed,
# watched or updated; patched only to hand a generated database password
# to its volume (ownerReferences), so that it goes with the data.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The managed PostgreSQL's volume, whose uid owns the password.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# The stack's pods, for failures their Deployment does not report.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Events on the stacks (a repeated event is patched into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
