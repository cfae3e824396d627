{{/* Names, labels and the pieces every workload shares. */}}

{{- define "llmops.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "llmops.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmops.image" -}}
{{- printf "%s/llmops-%s:%s" .root.Values.image.registry .component .root.Values.image.tag -}}
{{- end -}}

{{- define "llmops.kafkaCluster" -}}
{{- .Values.kafka.strimzi.clusterName -}}
{{- end -}}

{{- define "llmops.bootstrapServers" -}}
{{- if .Values.kafka.bootstrapServers -}}
{{- .Values.kafka.bootstrapServers -}}
{{- else -}}
{{- printf "%s-kafka-bootstrap:9093" (include "llmops.kafkaCluster" .) -}}
{{- end -}}
{{- end -}}

{{- define "llmops.caSecret" -}}
{{- default (printf "%s-cluster-ca-cert" (include "llmops.kafkaCluster" .)) .Values.kafka.caSecret.name -}}
{{- end -}}

{{/* The Kafka principal of a service (llmops_config.kafka.SERVICE_PRINCIPALS, as a Kubernetes name). */}}
{{- define "llmops.principal" -}}
{{- .component -}}
{{- end -}}

{{- define "llmops.passwordSecret" -}}
{{- $principal := include "llmops.principal" . -}}
{{- default $principal (get .root.Values.kafka.passwordSecrets $principal) -}}
{{- end -}}

{{- define "llmops.topic" -}}
{{- printf "%s%s" .root.Values.kafka.topicPrefix .name -}}
{{- end -}}

{{/* The environment every platform container gets: (dict "root" $ "component" "gateway") */}}
{{- define "llmops.env" -}}
{{- $v := .root.Values -}}
- name: LLMOPS_KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "llmops.bootstrapServers" .root | quote }}
- name: LLMOPS_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
- name: LLMOPS_KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.saslMechanism | quote }}
- name: LLMOPS_KAFKA_SASL_USERNAME
  value: {{ include "llmops.principal" . | quote }}
- name: LLMOPS_KAFKA_SASL_PASSWORD_FILE
  value: /etc/llmops/kafka/password
- name: LLMOPS_KAFKA_SSL_CAFILE
  value: /etc/llmops/kafka-ca/{{ $v.kafka.caSecret.key }}
- name: LLMOPS_KAFKA_TOPIC_PREFIX
  value: {{ $v.kafka.topicPrefix | quote }}
- name: LLMOPS_KAFKA_REPLICATION_FACTOR
  value: {{ $v.kafka.replicationFactor | quote }}
- name: LLMOPS_KAFKA_MIN_INSYNC_REPLICAS
  value: {{ $v.kafka.minInsyncReplicas | quote }}
# The Triton pool by DNS: the headless Service lists every ready Triton pod; the deployment service
# loads each version on all of them, the gateway balances over them (docs/cluster.md).
- name: LLMOPS_TRITON_HOST
  value: {{ printf "%s-triton-pool" (include "llmops.fullname" .root) | quote }}
- name: LLMOPS_TRITON_POOL_DNS
  value: "true"
- name: LLMOPS_VAR_DIR
  value: /var/lib/llmops
- name: LLMOPS_METRICS_HOST
  value: "0.0.0.0"
- name: LLMOPS_LOG_LEVEL
  value: {{ $v.platform.logLevel | quote }}
- name: LLMOPS_ARTIFACT_STORE_URI
  value: {{ $v.platform.artifactStoreUri | quote }}
- name: HF_HOME
  value: /var/lib/llmops/huggingface
- name: HF_HUB_OFFLINE
  value: "1"
{{- if $v.platform.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.platform.otlpEndpoint | quote }}
{{- end }}
{{- if $v.grpcTls.secretName }}
- name: LLMOPS_TLS_CA_FILE
  value: /etc/llmops/tls/ca.crt
- name: LLMOPS_TLS_SERVER_CERT_FILE
  value: /etc/llmops/tls/tls.crt
- name: LLMOPS_TLS_SERVER_KEY_FILE
  value: /etc/llmops/tls/tls.key
- name: LLMOPS_TLS_CLIENT_CERT_FILE
  value: /etc/llmops/tls/tls.crt
- name: LLMOPS_TLS_CLIENT_KEY_FILE
  value: /etc/llmops/tls/tls.key
{{- else }}
- name: LLMOPS_TLS_INSECURE
  value: "true"
{{- end }}
{{- range $name, $value := $v.platform.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "llmops.envFrom" -}}
{{- if .Values.platform.objectStoreSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.platform.objectStoreSecret }}
{{- end }}
{{- end -}}

{{/* Volume mounts and volumes of every platform container: state, /tmp, Kafka credentials and CA, gRPC TLS. */}}
{{- define "llmops.volumeMounts" -}}
- name: state
  mountPath: /var/lib/llmops
- name: tmp
  mountPath: /tmp
- name: kafka-password
  mountPath: /etc/llmops/kafka
  readOnly: true
- name: kafka-ca
  mountPath: /etc/llmops/kafka-ca
  readOnly: true
{{- if .root.Values.grpcTls.secretName }}
- name: grpc-tls
  mountPath: /etc/llmops/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "llmops.volumes" -}}
- name: state
  emptyDir:
    sizeLimit: {{ .root.Values.stateVolume.emptyDirSizeLimit }}
- name: tmp
  emptyDir: {}
- name: kafka-password
  secret:
    secretName: {{ include "llmops.passwordSecret" . }}
    items:
      - key: password
        path: password
- name: kafka-ca
  secret:
    secretName: {{ include "llmops.caSecret" .root }}
{{- if .root.Values.grpcTls.secretName }}
- name: grpc-tls
  secret:
    secretName: {{ .root.Values.grpcTls.secretName }}
{{- end }}
{{- end -}}
