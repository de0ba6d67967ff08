{{- define "election-sidecar.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "election-sidecar.fullname" -}}
{{- printf "%s-%s" .Release.Name .Values.election.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "election-sidecar.labels" -}}
app.kubernetes.io/name: {{ include "election-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "election-sidecar.selector" -}}
app.kubernetes.io/name: {{ include "election-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The sidecar as a native sidecar container (goes under initContainers).
Include it in your own pod template:
  initContainers:
    {{- include "election-sidecar.sidecarContainer" . | nindent 4 }}
*/}}
{{- define "election-sidecar.sidecarContainer" -}}
- name: election-sidecar
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args:
    - run
    - --backend={{ .Values.election.backend }}
    {{- if .Values.election.endpoints }}
    - --endpoints={{ join "," .Values.election.endpoints }}
    {{- end }}
    - --election={{ .Values.election.name }}
    - --id=$(POD_NAME)
    - --ttl={{ .Values.election.ttl }}
    - --renew-deadline={{ .Values.election.renewDeadline }}
    - --retry-interval={{ .Values.election.retryInterval }}
    - --kill-grace={{ .Values.election.killGrace }}
    - --socket={{ .Values.socket.dir }}/{{ .Values.socket.name }}
    - --http-addr=0.0.0.0:{{ .Values.http.port }}
    {{- if eq .Values.killTarget "peer" }}
    - --kill-peer
    {{- end }}
    {{- if and (eq .Values.election.backend "etcd") .Values.etcd.tls.enabled }}
    - --ca-file=/etc/election/tls/ca.crt
    - --cert-file=/etc/election/tls/tls.crt
    - --key-file=/etc/election/tls/tls.key
    {{- end }}
    {{- if and (eq .Values.election.backend "zookeeper") .Values.zookeeper.chroot }}
    - --zk-chroot={{ .Values.zookeeper.chroot }}
    {{- end }}
    {{- if and (eq .Values.election.backend "zookeeper") .Values.zookeeper.authSecret.name }}
    - --zk-auth-file=/etc/election/zk/auth
    {{- end }}
    {{- range .Values.election.extraArgs }}
    - {{ . }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: ELECTION_SIDECAR_LOG_FORMAT
      value: json
    {{- if .Values.election.endpointsSecret.name }}
    - name: ELECTION_SIDECAR_ENDPOINTS
      valueFrom:
        secretKeyRef:
          name: {{ .Values.election.endpointsSecret.name }}
          key: {{ .Values.election.endpointsSecret.key }}
    {{- end }}
  ports:
    - name: election-http
      containerPort: {{ .Values.http.port }}
  startupProbe:
    httpGet:
      path: /healthz
      port: election-http
    periodSeconds: 1
    failureThreshold: 30
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
    {{- if and (eq .Values.election.backend "zookeeper") .Values.zookeeper.authSecret.name }}
    - name: election-zk-auth
      mountPath: /etc/election/zk
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The pod volumes the sidecar needs; mount "election-socket" in the orchestrator too. */}}
{{- define "election-sidecar.volumes" -}}
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
