{{/* The six services, in start-up order. */}}
{{- define "ecommerce.serviceNames" -}}
inventory order user producer consumer gateway
{{- end }}

{{/* Services with a database of their own. */}}
{{- define "ecommerce.dbServices" -}}
inventory order user
{{- end }}

{{/*
Services that use NATS (NATS_ADDR, NATS_SUBJECT_PREFIX): the order event
stream's producer and consumer, and Inventory announcing product changes to
the gateways' product caches (plain NATS, best effort: both work without it).
*/}}
{{- define "ecommerce.natsServices" -}}
inventory producer consumer gateway
{{- end }}

{{/* Those of them that use the JetStream stream of order events (NATS_STREAM, NATS_DLQ_STREAM, NATS_CONNECT_WAIT_MS). */}}
{{- define "ecommerce.streamServices" -}}
producer consumer
{{- end }}

{{/*
Who calls whom (gRPC): the services' addresses and their NetworkPolicies
(egress to these only; each callee admits its callers only) follow from it.
*/}}
{{- define "ecommerce.calls" -}}
gateway: [inventory, order, user]
order: [inventory, producer]
consumer: [inventory, order]
{{- end }}

{{/* The release's own clients of the gateway's API: `helm test` pods, the load generator. */}}
{{- define "ecommerce.gatewayClients" -}}
test loadgen
{{- end }}

{{/* The port of a URL (`scheme://host:port/...`), or .default without one. */}}
{{- define "ecommerce.urlPort" -}}
{{- $authority := regexReplaceAll "^[a-z0-9+.-]+://" .url "" | splitList "/" | first | splitList "@" | last }}
{{- $port := regexFind ":[0-9]+$" $authority | trimPrefix ":" }}
{{- default (toString .default) $port }}
{{- end }}

{{- define "ecommerce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ecommerce.fullname" -}}
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

{{- define "ecommerce.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "ecommerce.labels" -}}
helm.sh/chart: {{ include "ecommerce.chart" .root }}
{{ include "ecommerce.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ecommerce
{{- end }}

{{- define "ecommerce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecommerce.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
A component's object name: <fullname>-<component>, at most 63 characters; a
long fullname is shortened, never the component, so names stay distinct.
*/}}
{{- define "ecommerce.componentName" -}}
{{- $suffix := printf "-%s" .component }}
{{- printf "%s%s" (include "ecommerce.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "ecommerce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecommerce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image of a service: (dict "root" $ "component" "gateway"). */}}
{{- define "ecommerce.image" -}}
{{- $img := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $img.tag }}
{{- if $img.registry }}
{{- printf "%s/%s/%s:%s" $img.registry $img.repository .component $tag }}
{{- else }}
{{- printf "%s/%s:%s" $img.repository .component $tag }}
{{- end }}
{{- end }}

{{/* The Secret the services read DB_PASSWORD, JWT_SECRET, ADMIN_PASSWORD and INTERNAL_AUTH_TOKEN from. */}}
{{- define "ecommerce.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "ecommerce.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The development profile (appEnv: development, the default) brings what a
local cluster lacks: the in-cluster PostgreSQL unless externalDatabase.host is
set, NATS unless externalNats.url is set, and a generated Secret unless
secrets.existingSecret is set. postgresql.enabled and nats.enabled force theirs
in either profile. Each gives "true" or "".
*/}}
{{- define "ecommerce.development" -}}
{{- if eq .Values.appEnv "development" }}true{{ end }}
{{- end }}

{{- define "ecommerce.postgresql" -}}
{{- if or .Values.postgresql.enabled (and (include "ecommerce.development" .) (not .Values.externalDatabase.host)) }}true{{ end }}
{{- end }}

{{- define "ecommerce.nats" -}}
{{- if or .Values.nats.enabled (and (include "ecommerce.development" .) (not .Values.externalNats.url)) }}true{{ end }}
{{- end }}

{{- define "ecommerce.secretCreated" -}}
{{- if and (include "ecommerce.development" .) (not .Values.secrets.existingSecret) }}true{{ end }}
{{- end }}

{{/*
The data of the release's Secret as the cluster has it (empty for
`helm template` and on first install): generated values are read back from
it. scripts/check-packaging.py stands in for the cluster by replacing this.
*/}}
{{- define "ecommerce.existingSecretData" -}}
{{- toYaml ((lookup "v1" "Secret" .Release.Namespace (include "ecommerce.secretName" .)).data | default dict) }}
{{- end }}

{{/*
Refuses settings that cannot work. Included by every service's Deployment, so
a bad combination fails the render.
*/}}
{{- define "ecommerce.validate" -}}
{{- $v := .Values }}
{{- if not (include "ecommerce.development" .) }}
{{- if not $v.secrets.existingSecret }}
{{- fail "appEnv is production: set secrets.existingSecret to a Secret holding DB_PASSWORD, JWT_SECRET and INTERNAL_AUTH_TOKEN (and ADMIN_PASSWORD with admin.username); production secrets never come from values" }}
{{- end }}
{{- range $value, $secret := $v.secrets.values }}
{{- if $secret }}
{{- fail (printf "secrets.values.%s is for development only: with appEnv production the secrets come from secrets.existingSecret" $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "ecommerce.secretCreated" . }}
{{- range $value := list "jwtSecret" "internalAuthToken" }}
{{- $secret := index $v.secrets.values $value }}
{{- if and $secret (lt (len $secret) 32) }}
{{- fail (printf "secrets.values.%s must be at least 32 bytes (or empty: generated)" $value) }}
{{- end }}
{{- end }}
{{- if and (not (include "ecommerce.postgresql" .)) (not $v.secrets.values.dbPassword) }}
{{- fail "externalDatabase.host without secrets.existingSecret needs secrets.values.dbPassword (that database's password: only the in-cluster PostgreSQL's is generated)" }}
{{- end }}
{{- end }}
{{- if and (not (include "ecommerce.postgresql" .)) (not $v.externalDatabase.host) }}
{{- fail "appEnv is production: set externalDatabase.host (or postgresql.enabled=true)" }}
{{- end }}
{{- if and (not (include "ecommerce.nats" .)) (not $v.externalNats.url) }}
{{- fail "appEnv is production: set externalNats.url (nats://host:4222) (or nats.enabled=true)" }}
{{- end }}
{{- if or (and $v.admin.username (not $v.admin.email)) (and $v.admin.email (not $v.admin.username)) }}
{{- fail "admin.username and admin.email go together (with the secret's ADMIN_PASSWORD)" }}
{{- end }}
{{- end }}

{{/* Where a service is dialled in the cluster: <host>:<port>. */}}
{{- define "ecommerce.dialAddr" -}}
{{- printf "%s:%v" (include "ecommerce.componentName" (dict "root" .root "component" .component)) (index .root.Values.services .component).port }}
{{- end }}

{{/*
The non-secret environment of one service, as a YAML map (names as in the
services' READMEs). (dict "root" $ "component" "order")
*/}}
{{- define "ecommerce.config" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $name := .component }}
{{- $svc := index $v.services $name }}
{{- $env := dict "APP_ENV" $v.appEnv "LOG_FORMAT" $v.logging.format }}
{{- if $v.logging.level }}
{{- $_ := set $env "RUST_LOG" $v.logging.level }}
{{- end }}
{{- if $v.tracing.otlpEndpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $v.tracing.otlpEndpoint }}
{{- $_ := set $env "OTEL_SERVICE_NAME" $name }}
{{- end }}
{{- $_ := set $env "METRICS_PORT" (toString $svc.metricsPort) }}
{{- if and (eq $name "gateway") $v.ingress.enabled }}
{{- /* Behind the Ingress every client would share the controller's address. */}}
{{- $_ := set $env "TRUSTED_PROXIES" (join "," $v.ingress.trustedProxies) }}
{{- end }}
{{- $listen := printf ":%v" $svc.port }}
{{- if eq $name "gateway" }}
{{- $_ := set $env "API_GATEWAY_ADDR" $listen }}
{{- else }}
{{- $_ := set $env (printf "%s_ADDR" (upper $name)) $listen }}
{{- end }}
{{- $calls := include "ecommerce.calls" $root | fromYaml }}
{{- range (get $calls $name | default (list)) }}
{{- $_ := set $env (printf "%s_ADDR" (upper .)) (include "ecommerce.dialAddr" (dict "root" $root "component" .)) }}
{{- end }}
{{- if has $name (list "gateway" "order" "consumer") }}
{{- $_ := set $env "GRPC_CONNECT_TIMEOUT_MS" (toString $v.grpc.connectTimeoutMs) }}
{{- $_ := set $env "GRPC_REQUEST_TIMEOUT_MS" (toString $v.grpc.requestTimeoutMs) }}
{{- end }}
{{- if has $name (splitList " " (include "ecommerce.dbServices" $root)) }}
{{- if include "ecommerce.postgresql" $root }}
{{- $_ := set $env "DB_HOST" (include "ecommerce.componentName" (dict "root" $root "component" "postgresql")) }}
{{- $_ := set $env "DB_PORT" "5432" }}
{{- $_ := set $env "DB_USER" "postgres" }}
{{- else }}
{{- $_ := set $env "DB_HOST" $v.externalDatabase.host }}
{{- $_ := set $env "DB_PORT" (toString $v.externalDatabase.port) }}
{{- $_ := set $env "DB_USER" $v.externalDatabase.user }}
{{- end }}
{{- if include "ecommerce.postgresql" $root }}
{{- /* The in-cluster PostgreSQL starts with the release: wait longer for it than the 30 s default. */}}
{{- $_ := set $env "DB_CONNECT_WAIT_MS" "120000" }}
{{- end }}
{{- $_ := set $env "DB_NAME" $v.externalDatabase.database }}
{{- $_ := set $env "DB_MAX_CONNECTIONS" (toString $v.externalDatabase.maxConnections) }}
{{- end }}
{{- if has $name (splitList " " (include "ecommerce.natsServices" $root)) }}
{{- if include "ecommerce.nats" $root }}
{{- $_ := set $env "NATS_ADDR" (printf "nats://%s:4222" (include "ecommerce.componentName" (dict "root" $root "component" "nats"))) }}
{{- else }}
{{- $_ := set $env "NATS_ADDR" $v.externalNats.url }}
{{- end }}
{{- $_ := set $env "NATS_SUBJECT_PREFIX" $v.events.subjectPrefix }}
{{- end }}
{{- if has $name (splitList " " (include "ecommerce.streamServices" $root)) }}
{{- if include "ecommerce.nats" $root }}
{{- /* The in-cluster NATS starts with the release: wait longer for it than the 30 s default. */}}
{{- $_ := set $env "NATS_CONNECT_WAIT_MS" "120000" }}
{{- end }}
{{- $_ := set $env "NATS_STREAM" $v.events.stream }}
{{- if $v.events.deadLetterStream }}
{{- $_ := set $env "NATS_DLQ_STREAM" $v.events.deadLetterStream }}
{{- end }}
{{- end }}
{{- if and (eq $name "user") $v.admin.username }}
{{- $_ := set $env "ADMIN_USERNAME" $v.admin.username }}
{{- $_ := set $env "ADMIN_EMAIL" $v.admin.email }}
{{- end }}
{{- range $k, $val := $svc.env }}
{{- $_ := set $env $k (toString $val) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* The secret environment of one service (secretKeyRef entries). */}}
{{- define "ecommerce.secretEnv" -}}
{{- $v := .root.Values }}
{{- $secret := include "ecommerce.secretName" .root }}
{{- if has .component (splitList " " (include "ecommerce.dbServices" .root)) }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.dbPassword }}
{{- end }}
{{- if eq .component "gateway" }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.jwtSecret }}
{{- end }}
{{- if and (eq .component "user") $v.admin.username }}
- name: ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.adminPassword }}
{{- end }}
- name: INTERNAL_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.internalAuthToken }}
{{- end }}

{{/* Pod and container security settings, probes and the /tmp volume. */}}
{{- define "ecommerce.podSecurityContext" -}}
{{- toYaml (default .root.Values.podSecurityContext .svc.podSecurityContext) }}
{{- end }}

{{- define "ecommerce.containerSecurityContext" -}}
{{- toYaml (default .root.Values.securityContext .svc.securityContext) }}
{{- end }}

{{/*
A service's autoscaling settings: the global ones with the service's own on
top (key by key, so that `enabled: false` overrides a global true).
*/}}
{{- define "ecommerce.autoscaling" -}}
{{- $auto := deepCopy .root.Values.autoscaling }}
{{- range $k, $val := (.svc.autoscaling | default dict) }}
{{- $_ := set $auto $k $val }}
{{- end }}
{{- toYaml $auto }}
{{- end }}

{{/*
"true" when a Prometheus Operator kind may be rendered: the cluster serves it
(.Capabilities) or monitoring.assumeCRDs says it will (`helm template`,
GitOps). Call with (dict "root" $ "kind" "PrometheusRule").
*/}}
{{- define "ecommerce.monitoringServed" -}}
{{- if or .root.Values.monitoring.assumeCRDs (.root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) }}true{{ end }}
{{- end }}
