{{/*
Names. Every object name is a DNS-1123 label (and starts with a letter, so
Services are DNS-1035 labels too) of at most 52 characters, so the longest
suffix we add ("-dashboard") still fits in 63. The election name may hold
characters an etcd prefix allows (A-Z _ . /); they are folded here.
*/}}
{{- define "election-sidecar.dnsLabel" -}}
{{- $name := regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trimAll "-" -}}
{{- if not (regexMatch "^[a-z]" $name) -}}{{- $name = printf "es-%s" $name -}}{{- end -}}
{{- $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "election-sidecar.name" -}}
{{- include "election-sidecar.dnsLabel" (.Values.nameOverride | default .Chart.Name) -}}
{{- end -}}

{{- define "election-sidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else -}}
{{- include "election-sidecar.dnsLabel" (printf "%s-%s" .Release.Name .Values.election.name) -}}
{{- end -}}
{{- end -}}

{{- define "election-sidecar.labels" -}}
app.kubernetes.io/name: {{ include "election-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: leader-election
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "election-sidecar.selector" -}}
app.kubernetes.io/name: {{ include "election-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- define "election-sidecar.image" -}}
{{- $registry := "" -}}
{{- with .root.Values.global }}{{ $registry = .imageRegistry | default "" }}{{ end -}}
{{- if $registry }}{{ printf "%s/%s:%s" $registry .image.repository .tag }}{{ else }}{{ printf "%s:%s" .image.repository .tag }}{{ end -}}
{{- end -}}

{{/*
The context the public snippets render with. Included from this chart, it is
the chart's own. Included from a parent chart that has this one as a dependency
(named election-sidecar), `.` is the parent's: use this chart's values, release
and files from .Subcharts, never the parent's .Values. With an alias, pass
(index .Subcharts "ALIAS") yourself.
*/}}
{{- define "election-sidecar.withContext" -}}
{{- $ctx := .ctx -}}
{{- if and (not (hasKey $ctx.Values "election")) $ctx.Subcharts -}}
{{- if hasKey $ctx.Subcharts "election-sidecar" -}}{{- $ctx = index $ctx.Subcharts "election-sidecar" -}}{{- end -}}
{{- end -}}
{{- include .template $ctx -}}
{{- end -}}

{{/*
The sidecar as a native sidecar container (goes under initContainers).
Include it in your own pod template:
  initContainers:
    {{- include "election-sidecar.sidecarContainer" . | nindent 4 }}
Every setting travels as an ELECTION_SIDECAR_* variable, so any command run
in the container (kubectl exec ... -- election-sidecar status) sees the same
store, election, TLS and chroot as `run`, with no flags.
*/}}
{{- define "election-sidecar.sidecarContainer" -}}
{{- include "election-sidecar.withContext" (dict "ctx" . "template" "election-sidecar.sidecarContainer.body") -}}
{{- end -}}

{{- define "election-sidecar.volumes" -}}
{{- include "election-sidecar.withContext" (dict "ctx" . "template" "election-sidecar.volumes.body") -}}
{{- end -}}

{{- define "election-sidecar.env" -}}
{{- $e := .Values.election -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: ELECTION_SIDECAR_BACKEND
  value: {{ $e.backend | quote }}
{{- if $e.endpointsSecret.name }}
- name: ELECTION_SIDECAR_ENDPOINTS
  valueFrom:
    secretKeyRef:
      name: {{ $e.endpointsSecret.name }}
      key: {{ $e.endpointsSecret.key }}
{{- else }}
- name: ELECTION_SIDECAR_ENDPOINTS
  value: {{ join "," $e.endpoints | quote }}
{{- end }}
- name: ELECTION_SIDECAR_ELECTION
  value: {{ $e.name | quote }}
- name: ELECTION_SIDECAR_CANDIDATE_ID
  value: $(POD_NAME)
- name: ELECTION_SIDECAR_TTL
  value: {{ $e.ttl | toString | quote }}
{{- range $field, $key := dict "RENEW_DEADLINE" "renewDeadline" "RETRY_INTERVAL" "retryInterval" "KILL_GRACE" "killGrace" "ORPHAN_RESIGN_AFTER" "orphanResignAfter" }}
{{- if not (kindIs "invalid" (index $e $key)) }}
- name: ELECTION_SIDECAR_{{ $field }}
  value: {{ index $e $key | toString | quote }}
{{- end }}
{{- end }}
- name: ELECTION_SIDECAR_SOCKET
  value: {{ printf "%s/%s" .Values.socket.dir .Values.socket.name | quote }}
- name: ELECTION_SIDECAR_HTTP_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.http.port | quote }}
{{- if eq .Values.killTarget "peer" }}
- name: ELECTION_SIDECAR_KILL_PEER
  value: "true"
{{- end }}
{{- if eq $e.backend "etcd" }}
{{- if .Values.etcd.tls.enabled }}
- name: ELECTION_SIDECAR_CA_FILE
  value: /etc/election/tls/ca.crt
- name: ELECTION_SIDECAR_CERT_FILE
  value: /etc/election/tls/tls.crt
- name: ELECTION_SIDECAR_KEY_FILE
  value: /etc/election/tls/tls.key
{{- end }}
{{- if .Values.etcd.auth.existingSecret }}
- name: ELECTION_SIDECAR_ETCD_USER
  valueFrom:
    secretKeyRef:
      name: {{ .Values.etcd.auth.existingSecret }}
      key: {{ .Values.etcd.auth.usernameKey }}
- name: ELECTION_SIDECAR_ETCD_PASSWORD_FILE
  value: /etc/election/etcd-auth/password
{{- end }}
{{- end }}
{{- if eq $e.backend "zookeeper" }}
{{- if .Values.zookeeper.chroot }}
- name: ELECTION_SIDECAR_ZK_CHROOT
  value: {{ .Values.zookeeper.chroot | quote }}
{{- end }}
{{- if .Values.zookeeper.authSecret.name }}
- name: ELECTION_SIDECAR_ZK_AUTH_FILE
  value: /etc/election/zk/auth
{{- end }}
{{- end }}
- name: ELECTION_SIDECAR_LOG_FORMAT
  value: json
- name: ELECTION_SIDECAR_LOG_LEVEL
  value: {{ .Values.logLevel | default "info" | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "election-sidecar.sidecarContainer.body" -}}
{{- if and (not .Values.election.endpoints) (not .Values.election.endpointsSecret.name) }}
{{- fail "set election.endpoints or election.endpointsSecret.name" }}
{{- end }}
- name: election-sidecar
  image: {{ include "election-sidecar.image" (dict "root" . "image" .Values.image "tag" (.Values.image.tag | default .Chart.AppVersion)) | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args:
    - run
    {{- range .Values.election.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- include "election-sidecar.env" . | nindent 4 }}
  ports:
    - name: election-http
      containerPort: {{ .Values.http.port }}
  startupProbe:
    httpGet:
      path: /healthz
      port: election-http
    periodSeconds: 1
    failureThreshold: 30
  # Liveness is the process (loop not stalled, no leader past its deadline);
  # an unconfirmed kill leaves it alive and out of the election, not restarted.
  livenessProbe:
    httpGet:
      path: /healthz
      port: election-http
    periodSeconds: 5
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: election-http
    periodSeconds: 5
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ .Values.runAsUser }}
    runAsGroup: {{ .Values.runAsGroup }}
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: election-socket
      mountPath: {{ .Values.socket.dir }}
    - name: election-tmp
      mountPath: /tmp
    {{- if and (eq .Values.election.backend "etcd") .Values.etcd.tls.enabled }}
    - name: election-etcd-tls
      mountPath: /etc/election/tls
      readOnly: true
    {{- end }}
    {{- if and (eq .Values.election.backend "etcd") .Values.etcd.auth.existingSecret }}
    - name: election-etcd-auth
      mountPath: /etc/election/etcd-auth
      readOnly: true
    {{- end }}
    {{- if and (eq .Values.election.backend "zookeeper") .Values.zookeeper.authSecret.name }}
    - name: election-zk-auth
      mountPath: /etc/election/zk
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The pod volumes the sidecar needs; mount "election-socket" in the orchestrator too. */}}
{{- define "election-sidecar.volumes.body" -}}
- name: election-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: election-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if and (eq .Values.election.backend "etcd") .Values.etcd.tls.enabled }}
- name: election-etcd-tls
  secret:
    secretName: {{ required "etcd.tls.secretName is required when etcd.tls.enabled" .Values.etcd.tls.secretName }}
    defaultMode: 0400
{{- end }}
{{- if and (eq .Values.election.backend "etcd") .Values.etcd.auth.existingSecret }}
- name: election-etcd-auth
  secret:
    secretName: {{ .Values.etcd.auth.existingSecret }}
    defaultMode: 0400
    items:
      - key: {{ .Values.etcd.auth.passwordKey }}
        path: password
{{- end }}
{{- if and (eq .Values.election.backend "zookeeper") .Values.zookeeper.authSecret.name }}
- name: election-zk-auth
  secret:
    secretName: {{ .Values.zookeeper.authSecret.name }}
    defaultMode: 0400
    items:
      - key: {{ .Values.zookeeper.authSecret.key }}
        path: auth
{{- end }}
{{- end -}}

{{/* Seconds the kubelet waits: the orchestrator stops, then the sidecar demotes and hands over. */}}
{{- define "election-sidecar.terminationGracePeriod" -}}
{{- $e := .Values.election -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $ttl := float64 $e.ttl -}}
{{- $kill := (kindIs "invalid" $e.killGrace) | ternary (mulf $ttl 0.2) (float64 $e.killGrace) -}}
{{- $retry := (kindIs "invalid" $e.retryInterval) | ternary (mulf $ttl 0.2) (float64 $e.retryInterval) -}}
{{- addf .Values.orchestrator.shutdownSeconds $kill (mulf 2 $retry) 1 | ceil | int -}}
{{- end -}}
{{- end -}}
