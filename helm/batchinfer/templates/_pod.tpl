{{/* The Ray pods: one pod template for the head and every worker group, its environment and affinity. */}}

{{/*
Environment of the Ray containers: S3 endpoint/region as values, credentials only by reference.
*/}}
{{- define "batchinfer.env" -}}
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.existingSecret }}
{{- if .name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .secretAccessKeyKey }}
{{- if .sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .sessionTokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Affinity of a pod: (dict "root" $ "affinity" <map> "avoidGpuNodes" <bool>). With avoidGpuNodes and no
nodeAffinity of its own, a required node affinity term keeps the pod off nodes that carry any of
gpuNodeLabels (one term: its expressions must all hold).
*/}}
{{- define "batchinfer.affinity" -}}
{{- $affinity := deepCopy (default (dict) .affinity) }}
{{- if and .avoidGpuNodes .root.Values.gpuNodeLabels (not (hasKey $affinity "nodeAffinity")) }}
{{- $expressions := list }}
{{- range .root.Values.gpuNodeLabels }}
{{- $expressions = append $expressions (dict "key" . "operator" "DoesNotExist") }}
{{- end }}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list (dict "matchExpressions" $expressions)))) }}
{{- end }}
{{- if $affinity }}{{ toYaml $affinity }}{{ end }}
{{- end }}

{{/*
ONE pod template for every Ray pod: the head and each worker group.
Call with (dict "root" $ "kind" "head"|"worker" "group" <head values or merged worker group>).
*/}}
{{- define "batchinfer.rayPodTemplate" -}}
{{- $root := .root }}
{{- $g := .group }}
{{- $isHead := eq .kind "head" }}
{{- $gpus := 0 }}
{{- if not $isHead }}{{ $gpus = int64 $g.gpus }}{{ end }}
{{- $avoidGpuNodes := and $g.avoidGpuNodes (eq $gpus 0) }}
metadata:
  labels:
    {{- include "batchinfer.podLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "ray-head" (printf "ray-worker-%s" (default "" $g.name)) $isHead }}
    {{- with $g.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with merge (dict) (default (dict) $g.annotations) (ternary (include "batchinfer.disruptionAnnotations" $root | fromYaml) (dict) $isHead) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ ternary (include "batchinfer.headServiceAccountName" $root) (include "batchinfer.serviceAccountName" $root) $isHead }}
  {{- /* Only the head's autoscaler sidecar talks to the Kubernetes API. */}}
  automountServiceAccountToken: {{ and $isHead $root.Values.autoscaling.enabled }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $g.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "batchinfer.affinity" (dict "root" $root "affinity" $g.affinity "avoidGpuNodes" $avoidGpuNodes) }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $isHead }}
      image: {{ include "batchinfer.podImage" (dict "root" $root "cpu" (and $isHead $g.useCpuImage)) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      env:
        {{- include "batchinfer.env" $root | trim | nindent 8 }}
      {{- if $isHead }}
      ports:
        - name: gcs-server
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
      {{- end }}
      resources:
        requests:
          cpu: {{ $g.cpu | quote }}
          memory: {{ $g.memory | quote }}
          {{- if gt $gpus 0 }}
          {{ $g.gpuResourceName }}: {{ $gpus }}
          {{- end }}
        limits:
          cpu: {{ $g.cpu | quote }}
          memory: {{ $g.memory | quote }}
          {{- if gt $gpus 0 }}
          {{ $g.gpuResourceName }}: {{ $gpus }}
          {{- end }}
      {{- with $root.Values.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sh", "-c", "ray stop"]
      {{- /* No shmSize: no /dev/shm here, so KubeRay mounts one sized to the memory limit
             (common/pod.go BuildPod -> addEmptyDir -> makeEmptyDirVolume). */}}
      volumeMounts:
        {{- if $g.shmSize }}
        - name: dshm
          mountPath: /dev/shm
        {{- end }}
        - name: ray-logs
          mountPath: /tmp/ray
  volumes:
    {{- if $g.shmSize }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $g.shmSize | quote }}
    {{- end }}
    - name: ray-logs
      emptyDir: {}
{{- end }}
