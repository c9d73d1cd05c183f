{{/*
The operator console (values `console`, docs/console.md): `tessera serve-console` in its own Deployment,
reached only through the gateway's Envoy at /console; it calls the admin service with the signed-in
person's ID token, so the admin containers get the same TESSERA_OIDC_* settings.
*/}}

{{- define "tessera.consoleValidate" -}}
{{- $c := .Values.console -}}
{{- if $c.enabled -}}
{{- if not $c.oidc.issuer -}}
{{- fail "console.enabled needs console.oidc.issuer: the OpenID provider people sign in with (e.g. https://login.example.com)" -}}
{{- end -}}
{{- if not $c.oidc.clientId -}}
{{- fail "console.enabled needs console.oidc.clientId: the console's client id at the provider (ID tokens name it as audience)" -}}
{{- end -}}
{{- if not $c.oidc.roleMap -}}
{{- fail "console.enabled needs console.oidc.roleMap: claim values mapped to roles, e.g. {tessera-ops: operator}; nobody unmapped may sign in" -}}
{{- end -}}
{{- if not $c.existingSecret -}}
{{- fail "console.enabled needs console.existingSecret: a Secret with the console's OIDC client secret under console.clientSecretKey (never a plain value)" -}}
{{- end -}}
{{- if not $c.publicUrl -}}
{{- fail "console.enabled needs console.publicUrl: where browsers reach the gateway (the redirect URI is {publicUrl}/console/auth/callback)" -}}
{{- end -}}
{{- if ne (int $c.replicas) 1 -}}
{{- fail (printf "console.replicas is %d: console sessions live in the console process, so it runs exactly one replica" (int $c.replicas)) -}}
{{- end -}}
{{- if and (eq .Values.mode "gateway") (not .Values.gateway.enabled) -}}
{{- fail "console.enabled with gateway.enabled=false: the console is served behind Tessera's own Envoy at /console (mode gateway with the gateway, or mode sidecar)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* host:port of the console's Service, for `tessera envoy-config --console`. Empty when it is off. */}}
{{- define "tessera.consoleAddress" -}}
{{- if .Values.console.enabled -}}
{{- printf "%s-console:%v" (include "tessera.fullname" .) .Values.console.port -}}
{{- end -}}
{{- end -}}

{{/* The admin service's gRPC address: the check pod's Service on SQLite, the admin Service on PostgreSQL. */}}
{{- define "tessera.adminServiceAddress" -}}
{{- if include "tessera.postgres" . -}}
{{- printf "%s-admin:%v" (include "tessera.fullname" .) .Values.admin.port -}}
{{- else -}}
{{- printf "%s-check:%v" (include "tessera.fullname" .) .Values.admin.port -}}
{{- end -}}
{{- end -}}

{{/* TESSERA_OIDC_*: read by both the admin service and the console. Nothing when the console is off. */}}
{{- define "tessera.oidcEnv" -}}
{{- $c := .Values.console -}}
{{- if $c.enabled }}
- name: TESSERA_OIDC_ISSUER
  value: {{ $c.oidc.issuer | quote }}
- name: TESSERA_OIDC_CLIENT_ID
  value: {{ $c.oidc.clientId | quote }}
{{- with $c.oidc.jwksUri }}
- name: TESSERA_OIDC_JWKS_URI
  value: {{ . | quote }}
{{- end }}
- name: TESSERA_OIDC_ROLE_MAP
  {{- $pairs := list }}
  {{- range $value, $role := $c.oidc.roleMap }}
  {{- $pairs = append $pairs (printf "%s=%s" $value $role) }}
  {{- end }}
  value: {{ join "," $pairs | quote }}
- name: TESSERA_OIDC_ROLE_CLAIM
  value: {{ $c.oidc.roleClaim | quote }}
- name: TESSERA_OIDC_TENANT_CLAIM
  value: {{ $c.oidc.tenantClaim | quote }}
- name: TESSERA_OIDC_PRINCIPAL_CLAIM
  value: {{ $c.oidc.principalClaim | quote }}
{{- end }}
{{- end -}}

{{- define "tessera.consoleContainer" -}}
{{- $c := .Values.console -}}
- name: console
  image: {{ include "tessera.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--log-level", {{ $c.logLevel | quote }}, "serve-console"]
  env:
    - name: TESSERA_HOST
      value: "0.0.0.0"
    - name: TESSERA_CONSOLE_PORT
      value: {{ $c.port | quote }}
    - name: TESSERA_CONSOLE_PUBLIC_URL
      value: {{ $c.publicUrl | trimSuffix "/" | quote }}
    - name: TESSERA_CONSOLE_ADMIN_ADDRESS
      value: {{ include "tessera.adminServiceAddress" . | quote }}
    - name: TESSERA_CONSOLE_CLIENT_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ $c.existingSecret }}
          key: {{ $c.clientSecretKey }}
    - name: TESSERA_CONSOLE_SESSION_TTL_S
      value: {{ $c.sessionTtlS | quote }}
    - name: TESSERA_CONSOLE_POLL_S
      value: {{ $c.pollS | quote }}
    {{- include "tessera.oidcEnv" . | nindent 4 }}
    {{- with .Values.oauth.outboundAllow }}
    - name: TESSERA_OUTBOUND_ALLOW
      value: {{ join "," . | quote }}
    {{- end }}
    {{- include "tessera.extraEnv" $c.env | nindent 4 }}
  ports:
    - name: http-console
      containerPort: {{ $c.port }}
  startupProbe:
    httpGet: { path: /console/healthz, port: http-console }
    periodSeconds: 2
    failureThreshold: 30
  livenessProbe:
    httpGet: { path: /console/healthz, port: http-console }
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: { path: /console/healthz, port: http-console }
    periodSeconds: 5
    failureThreshold: 2
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end -}}
