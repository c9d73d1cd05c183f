{{/* Names, labels and the pieces every Tessera container shares. */}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- end -}}

{{/* selector labels of one component: check, admin, gateway */}}
{{- define "tessera.selector" -}}
app.kubernetes.io/name: {{ include "tessera.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tessera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tessera.envoyImage" -}}
{{- $img := .Values.envoy.image | default dict -}}
{{- if $img.repository -}}
{{- printf "%s:%s" $img.repository (default "latest" $img.tag) -}}
{{- else -}}
{{- include "tessera.image" . -}}
{{- end -}}
{{- end -}}

{{- define "tessera.postgres" -}}
{{- if eq .Values.database.type "postgresql" -}}true{{- end -}}
{{- end -}}

{{/* The admin service runs inside the check pod when the store is SQLite (one database file). */}}
{{- define "tessera.adminInCheckPod" -}}
{{- if ne .Values.database.type "postgresql" -}}true{{- end -}}
{{- end -}}

{{/* Render-time checks the JSON schema cannot express. */}}
{{- define "tessera.validate" -}}
{{- if ne .Values.database.type "postgresql" -}}
{{- if gt (int .Values.check.replicas) 1 -}}
{{- fail (printf "check.replicas is %d: more than one check replica needs PostgreSQL (set database.type=postgresql and database.existingSecret); SQLite is one file in one pod" (int .Values.check.replicas)) -}}
{{- end -}}
{{- if .Values.check.autoscaling.enabled -}}
{{- fail "check.autoscaling.enabled: scaling the check service needs PostgreSQL (database.type=postgresql); SQLite is one file in one pod" -}}
{{- end -}}
{{- if gt (int .Values.admin.replicas) 1 -}}
{{- fail "admin.replicas > 1 needs PostgreSQL (database.type=postgresql); with SQLite the admin service runs in the check pod" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.database.type "postgresql") (not .Values.database.existingSecret) -}}
{{- fail "database.type=postgresql needs database.existingSecret: a Secret with the PostgreSQL URL under database.urlKey" -}}
{{- end -}}
{{- if and (not .Values.tenants.demo) (not .Values.tenants.config) -}}
{{- fail "tenants.demo is false: give tenants.config (the tenants file), or set tenants.demo=true for the demo tenants" -}}
{{- end -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.otlpEndpoint) -}}
{{- fail "tracing.enabled needs tracing.otlpEndpoint: the OTLP receiver of the check and admin services' spans (e.g. http://otel-collector.observability:4317)" -}}
{{- end -}}
{{- include "tessera.oauthValidate" . -}}
{{- include "tessera.consoleValidate" . -}}
{{- if and .Values.istio.enabled (eq .Values.mode "sidecar") -}}
{{- fail "istio.enabled with mode=sidecar: Istio's sidecars call the check service themselves; use mode=gateway with gateway.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the check and admin containers (and the migrations Job). */}}
{{- define "tessera.commonEnv" -}}
- name: TESSERA_HOST
  value: "0.0.0.0"
- name: TESSERA_VAR_DIR
  value: /var/lib/tessera
- name: TESSERA_CHECK_PORT
  value: {{ .Values.check.port | quote }}
- name: TESSERA_METRICS_PORT
  value: {{ .Values.check.metricsPort | quote }}
- name: TESSERA_ADMIN_PORT
  value: {{ .Values.admin.port | quote }}
- name: TESSERA_ADMIN_METRICS_PORT
  value: {{ .Values.admin.metricsPort | quote }}
- name: TESSERA_MASTER_KEY_FILE
  value: /var/run/secrets/tessera/master-key/{{ .Values.masterKey.key }}
- name: TESSERA_ACTIVE_KID
  value: {{ .Values.masterKey.activeKid | quote }}
{{- with .Values.masterKey.liveKids }}
- name: TESSERA_LIVE_KIDS
  value: {{ join "," . | quote }}
{{- end }}
- name: TESSERA_RECEIPTS
  value: {{ .Values.receipts.enabled | quote }}
{{- with .Values.receipts.kids }}
- name: TESSERA_RECEIPT_KIDS
  value: {{ join "," . | quote }}
{{- end }}
- name: TESSERA_RECEIPT_TTL_S
  value: {{ .Values.receipts.ttlS | quote }}
{{- if include "tessera.postgres" . }}
- name: TESSERA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- end }}
{{- if not .Values.tenants.demo }}
- name: TESSERA_TENANTS_FILE
  value: /etc/tessera/config/tenants.yaml
{{- end }}
{{- include "tessera.oauthEnv" . }}
{{- end -}}

{{/* OpenTelemetry settings of one service (argument: dict root, service). Nothing when tracing is off. */}}
{{- define "tessera.tracingEnv" -}}
{{- $t := .root.Values.tracing -}}
{{- if $t.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | quote }}
{{- end }}
{{- end -}}

{{- define "tessera.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Volumes for the Tessera containers: master key, state directory, tenants config, /tmp. */}}
{{- define "tessera.volumes" -}}
- name: master-key
  secret:
    secretName: {{ .Values.masterKey.existingSecret }}
    defaultMode: 0400
- name: state
{{- if and (not (include "tessera.postgres" .)) .Values.database.sqlite.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "tessera.fullname" . }}-state
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- if not .Values.tenants.demo }}
- name: tenants
  projected:
    sources:
      - configMap:
          name: {{ include "tessera.fullname" . }}-tenants
      {{- if .Values.tenants.policies }}
      - configMap:
          name: {{ include "tessera.fullname" . }}-policies
          items:
          {{- range $file, $_ := .Values.tenants.policies }}
            - key: {{ $file }}
              path: policies/{{ $file }}
          {{- end }}
      {{- end }}
      {{- if .Values.tenants.catalogs }}
      - configMap:
          name: {{ include "tessera.fullname" . }}-catalogs
          items:
          {{- range $file, $_ := .Values.tenants.catalogs }}
            - key: {{ $file }}
              path: catalogs/{{ $file }}
          {{- end }}
      {{- end }}
{{- end }}
{{- include "tessera.oauthVolume" . }}
{{- end -}}

{{- define "tessera.volumeMounts" -}}
- name: master-key
  mountPath: /var/run/secrets/tessera/master-key
  readOnly: true
- name: state
  mountPath: /var/lib/tessera
- name: tmp
  mountPath: /tmp
{{- if not .Values.tenants.demo }}
- name: tenants
  mountPath: /etc/tessera/config
  readOnly: true
{{- end }}
{{- include "tessera.oauthVolumeMount" . }}
{{- end -}}

{{/* The check service container. */}}
{{- define "tessera.checkContainer" -}}
- name: check
  image: {{ include "tessera.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--log-level", {{ .Values.check.logLevel | quote }}, "serve"]
  env:
    {{- include "tessera.commonEnv" . | nindent 4 }}
    - name: TESSERA_DEADLINE_MS
      value: {{ .Values.check.deadlineMs | quote }}
    {{- include "tessera.tracingEnv" (dict "root" . "service" "tessera-check") | nindent 4 }}
    {{- include "tessera.extraEnv" .Values.check.env | nindent 4 }}
  ports:
    - name: grpc-check
      containerPort: {{ .Values.check.port }}
    - name: http-metrics
      containerPort: {{ .Values.check.metricsPort }}
  startupProbe:
    httpGet: { path: /healthz, port: http-metrics }
    periodSeconds: 2
    failureThreshold: 60
  livenessProbe:
    httpGet: { path: /healthz, port: http-metrics }
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: { path: /readyz, port: http-metrics }
    periodSeconds: 5
    failureThreshold: 2
  resources:
    {{- toYaml .Values.check.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "tessera.volumeMounts" . | nindent 4 }}
{{- end -}}

{{/* The admin service container (its own Deployment on PostgreSQL, in the check pod on SQLite). */}}
{{- define "tessera.adminContainer" -}}
- name: admin
  image: {{ include "tessera.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--log-level", {{ .Values.admin.logLevel | quote }}, "serve-admin"]
  env:
    {{- include "tessera.commonEnv" . | nindent 4 }}
    {{- if .Values.bootstrapAdminKey.existingSecret }}
    - name: TESSERA_BOOTSTRAP_ADMIN_KEY
      valueFrom:
        secretKeyRef:
          name: {{ .Values.bootstrapAdminKey.existingSecret }}
          key: {{ .Values.bootstrapAdminKey.key }}
    {{- end }}
    {{- include "tessera.tracingEnv" (dict "root" . "service" "tessera-admin") | nindent 4 }}
    {{- with .Values.admin.trustedProxies }}
    - name: TESSERA_ADMIN_TRUSTED_PROXIES
      value: {{ join "," . | quote }}
    {{- end }}
    {{- include "tessera.oidcEnv" . | nindent 4 }}
    {{- include "tessera.extraEnv" .Values.admin.env | nindent 4 }}
  ports:
    - name: grpc-admin
      containerPort: {{ .Values.admin.port }}
    - name: http-admin-mx
      containerPort: {{ .Values.admin.metricsPort }}
  startupProbe:
    grpc: { port: {{ .Values.admin.port }} }
    periodSeconds: 2
    failureThreshold: 60
  livenessProbe:
    grpc: { port: {{ .Values.admin.port }} }
    periodSeconds: 10
  readinessProbe:
    grpc: { port: {{ .Values.admin.port }} }
    periodSeconds: 5
  resources:
    {{- toYaml .Values.admin.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "tessera.volumeMounts" . | nindent 4 }}
{{- end -}}

{{/*
Envoy: an init container renders the bootstrap with `tessera envoy-config` (the renderer `tessera run`
uses), the envoy container runs it. Arguments: dict root, mode (front-proxy|sidecar), checks (list of
host:port), admin (host:port).
*/}}
{{- define "tessera.envoyInit" -}}
{{- $root := .root -}}
- name: envoy-config
  image: {{ include "tessera.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    - envoy-config
    - --mode
    - {{ .mode }}
    - --listen
    - "0.0.0.0:{{ $root.Values.envoy.port }}"
    - --envoy-admin-port
    - {{ int $root.Values.envoy.adminPort | quote }}
    {{- range .checks }}
    - --check
    - {{ . | quote }}
    {{- end }}
    - --admin
    - {{ .admin | quote }}
    - --upstream
    - "{{ $root.Values.upstream.host }}:{{ $root.Values.upstream.port }}"
    - --check-timeout-ms
    - {{ int $root.Values.envoy.checkTimeoutMs | quote }}
    - --max-request-bytes
    - {{ int $root.Values.envoy.maxRequestBytes | quote }}
    {{- range $root.Values.mcp.corsOrigins }}
    - --cors-origin
    - {{ . | quote }}
    {{- end }}
    - --mcp-idle-timeout-ms
    - {{ int $root.Values.mcp.idleTimeoutMs | quote }}
    {{- range $name, $address := $root.Values.mcp.servers }}
    - --mcp-server
    - {{ printf "%s=%s" $name $address | quote }}
    {{- end }}
    {{- if and $root.Values.tracing.enabled $root.Values.tracing.envoyCollector }}
    - --otlp
    - {{ $root.Values.tracing.envoyCollector | quote }}
    {{- end }}
    {{- include "tessera.envoyOAuthArgs" $root | nindent 4 }}
    {{- with include "tessera.consoleAddress" $root }}
    - --console
    - {{ . | quote }}
    {{- end }}
    - --output
    - /etc/envoy/envoy.yaml
  resources:
    requests: { cpu: 50m, memory: 96Mi }
    limits: { memory: 192Mi }
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: envoy-config
      mountPath: /etc/envoy
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{- define "tessera.envoyContainer" -}}
{{- $img := .Values.envoy.image | default dict -}}
- name: envoy
  image: {{ include "tessera.envoyImage" . }}
  imagePullPolicy: {{ $img.pullPolicy | default .Values.image.pullPolicy }}
  command:
    - envoy
    - -c
    - /etc/envoy/envoy.yaml
    - --concurrency
    - {{ .Values.envoy.concurrency | quote }}
    - -l
    - {{ .Values.envoy.logLevel }}
    - --disable-hot-restart
  ports:
    - name: http
      containerPort: {{ .Values.envoy.port }}
  # The admin listener (/ready) stays on loopback, so the kubelet probes the agent-facing port.
  startupProbe:
    tcpSocket: { port: http }
    periodSeconds: 2
    failureThreshold: 30
  livenessProbe:
    tcpSocket: { port: http }
    periodSeconds: 10
  readinessProbe:
    tcpSocket: { port: http }
    periodSeconds: 5
  resources:
    {{- toYaml .Values.envoy.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: envoy-config
      mountPath: /etc/envoy
      readOnly: true
    - name: tmp
      mountPath: /tmp
{{- end -}}


{{/*
OAuth (values `oauth`, docs/mcp.md): the trusted issuers file mounted in the check and admin pods, and
the listener's mode passed to `tessera envoy-config`.
*/}}
{{- define "tessera.oauthValidate" -}}
{{- $o := .Values.oauth -}}
{{- if and $o.enabled (not $o.resource) (not $o.tenants) -}}
{{- fail "oauth.enabled needs oauth.resource (with oauth.authorizationServers) or oauth.tenants: the resource URL(s) clients reach" -}}
{{- end -}}
{{- if and $o.enabled $o.resource (not $o.authorizationServers) -}}
{{- fail "oauth.resource needs oauth.authorizationServers: the issuers its metadata names" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.oauthEnv" -}}
{{- if .Values.oauth.issuers }}
- name: TESSERA_OAUTH_ISSUERS_FILE
  value: /etc/tessera/oauth/issuers.yaml
{{- end }}
{{- with .Values.oauth.outboundAllow }}
- name: TESSERA_OUTBOUND_ALLOW
  value: {{ join "," . | quote }}
{{- end }}
{{- end -}}

{{- define "tessera.oauthVolume" -}}
{{- if .Values.oauth.issuers }}
- name: oauth-issuers
  configMap:
    name: {{ include "tessera.fullname" . }}-oauth-issuers
{{- end }}
{{- end -}}

{{- define "tessera.oauthVolumeMount" -}}
{{- if .Values.oauth.issuers }}
- name: oauth-issuers
  mountPath: /etc/tessera/oauth
  readOnly: true
{{- end }}
{{- end -}}

{{- define "tessera.envoyOAuthArgs" -}}
{{- $o := .Values.oauth -}}
- --oauth-token-rate-limit
- {{ $o.tokenRateLimit | default "60/60s" | quote }}
{{- if $o.enabled -}}
{{- if $o.resource }}
- --oauth-resource
- {{ $o.resource | quote }}
{{- range $o.authorizationServers }}
- --oauth-authorization-server
- {{ . | quote }}
{{- end }}
{{- end }}
{{- range $o.tenants }}
- --oauth-tenant
- {{ printf "%s,%s,%s" .tenant .resource (join "," .authorizationServers) | quote }}
{{- end }}
{{- end -}}
{{- end -}}
