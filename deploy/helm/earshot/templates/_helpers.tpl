{{/* Chart name, overridable. */}}
{{- define "earshot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; release name first unless it already contains the chart name. */}}
{{- define "earshot.fullname" -}}
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

{{- define "earshot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "api"). */}}
{{- define "earshot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "earshot.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component: call with (dict "ctx" $ "component" "api"). */}}
{{- define "earshot.labels" -}}
helm.sh/chart: {{ include "earshot.chart" .ctx }}
{{ include "earshot.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: earshot
{{- end }}

{{/* The one image every component runs; a digest wins over a tag. */}}
{{- define "earshot.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "earshot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "earshot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "earshot.loaderServiceAccountName" -}}
{{- if .Values.loader.serviceAccount.create }}
{{- default (printf "%s-loader" (include "earshot.fullname" .)) .Values.loader.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.loader.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "earshot.secretName" -}}
{{- required "existingSecret.name is required: create a Secret holding DATABASE_URL (and optionally REDIS_URL, EARSHOT_SIGNING_KEYS) first, see docs/OPERATIONS.md" .Values.existingSecret.name }}
{{- end }}

{{/*
Non-secret environment as a map, shared by the ConfigMap (Deployments) and
the migration hook (which runs before the ConfigMap exists).
*/}}
{{- define "earshot.configEnv" -}}
EARSHOT_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
RUST_LOG: {{ .Values.config.rustLog | quote }}
EARSHOT_PIXEL_BASE_URL: {{ required "config.pixelBaseUrl is required: the SAM output PixelBaseUrl" .Values.config.pixelBaseUrl | quote }}
EARSHOT_RETENTION_DAYS: {{ .Values.config.retentionDays | quote }}
EARSHOT_API_ADDR: {{ printf "0.0.0.0:%d" (int .Values.api.port) | quote }}
EARSHOT_LOADER_ADDR: {{ printf "0.0.0.0:%d" (int .Values.loader.port) | quote }}
{{- if .Values.config.awsRegion }}
AWS_REGION: {{ .Values.config.awsRegion | quote }}
{{- end }}
{{- if .Values.loader.enabled }}
EARSHOT_SOURCE: {{ required "loader.source is required when loader.enabled: sqs:<SAM output QueueUrl>, s3://bucket/prefix or dir:/path" .Values.loader.source | quote }}
{{- if hasPrefix "sqs:" .Values.loader.source }}
EARSHOT_EVENTS_BUCKET: {{ required "loader.eventsBucket is required with an sqs: loader.source: the SAM output EventsBucket (the loader reads only objects notified from it)" .Values.loader.eventsBucket | quote }}
EARSHOT_EVENTS_PREFIX: {{ .Values.loader.eventsPrefix | quote }}
{{- end }}
{{- end }}
{{- range $k, $v := .Values.config.extraEnv }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}

{{/* One secretKeyRef env entry: (dict "secret" NAME "env" "DATABASE_URL" "key" "DATABASE_URL"). */}}
{{- define "earshot.secretEnvEntry" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/*
Secret environment per component, least privilege. The database: each part
connects with its own role's URL when database.<part>.secretName names its
Secret (EARSHOT_LOADER_DATABASE_URL, EARSHOT_API_DATABASE_URL), else with
existingSecret's DATABASE_URL (one role for everything); the migration Job
gets DATABASE_URL (the owner's) and the other roles' URLs, to create them
and set their rights. The API and the loader get REDIS_URL; only the API,
which signs pixel URLs, gets the signing keys.
Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "earshot.secretEnv" -}}
{{- $keys := .ctx.Values.existingSecret.keys }}
{{- $secret := include "earshot.secretName" .ctx }}
{{- $db := .ctx.Values.database }}
{{- $own := get $db .component }}
{{- if and $own $own.secretName }}
{{- include "earshot.secretEnvEntry" (dict "secret" $own.secretName "env" (printf "EARSHOT_%s_DATABASE_URL" (upper .component)) "key" $own.key) }}
{{- else }}
{{- include "earshot.secretEnvEntry" (dict "secret" $secret "env" "DATABASE_URL" "key" $keys.databaseUrl) }}
{{- end }}
{{- if eq .component "migrate" }}
{{- range $part := list "loader" "api" }}
{{- $role := get $db $part }}
{{- if $role.secretName }}
{{ include "earshot.secretEnvEntry" (dict "secret" $role.secretName "env" (printf "EARSHOT_%s_DATABASE_URL" (upper $part)) "key" $role.key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $keys.redisUrl (has .component (list "api" "loader")) }}
{{ include "earshot.secretEnvEntry" (dict "secret" $secret "env" "REDIS_URL" "key" $keys.redisUrl) }}
{{- end }}
{{- if and $keys.signingKeys (eq .component "api") }}
{{ include "earshot.secretEnvEntry" (dict "secret" $secret "env" "EARSHOT_SIGNING_KEYS" "key" $keys.signingKeys) }}
{{- end }}
{{- end }}

{{/* Pod-level settings every earshot pod shares. */}}
{{- define "earshot.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{/* Container-level settings every earshot container shares. */}}
{{- define "earshot.containerCommon" -}}
image: {{ include "earshot.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* Egress rules of the NetworkPolicies; nothing (unrestricted) unless networkPolicy.egress is set. */}}
{{- define "earshot.egressPolicy" -}}
{{- with .Values.networkPolicy.egress }}
egress:
  # DNS, so that the rules below can name hosts.
  - to:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: kube-system
    ports:
      - { port: 53, protocol: UDP }
      - { port: 53, protocol: TCP }
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
