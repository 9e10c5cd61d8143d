{{/*
Chart name, truncated to 40 characters.
*/}}
{{- define "batchinfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name = the RayJob name. KubeRay limits RayJob names to 47 characters
(DNS-1035 label) because it derives the RayCluster and head Service names from it.
*/}}
{{- define "batchinfer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "batchinfer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "batchinfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "batchinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels (every object and pod).
*/}}
{{- define "batchinfer.labels" -}}
helm.sh/chart: {{ include "batchinfer.chart" . }}
{{ include "batchinfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: batchinfer
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "batchinfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "batchinfer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image: tag defaults to appVersion, "<appVersion>-cpu" under cpuFallback.
*/}}
{{- define "batchinfer.image" -}}
{{- $tag := .Values.image.tag }}
{{- if not $tag }}
{{- $tag = .Chart.AppVersion }}
{{- if .Values.cpuFallback.enabled }}
{{- $tag = printf "%s-cpu" $tag }}
{{- end }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
POSIX shell quoting of one argument: plain words stay as they are, anything else is wrapped in
single quotes with embedded single quotes written as '"'"'. KubeRay inserts the entrypoint into
`bash -c "... ray job submit ... -- <entrypoint>"`, and Ray runs it through a shell again after
re-quoting it with shlex.join, so quoting once here yields exactly these argv words.
*/}}
{{- define "batchinfer.shquote" -}}
{{- $s := toString . }}
{{- if regexMatch "^[A-Za-z0-9_@%+=:,./-]+$" $s }}
{{- $s }}
{{- else }}
{{- printf "'%s'" (replace "'" "'\"'\"'" $s) }}
{{- end }}
{{- end }}

{{/*
The job's argv as a list (before quoting).
*/}}
{{- define "batchinfer.jobArgs" -}}
{{- $j := .Values.job }}
{{- $args := list "batchinfer" "run" "--input" $j.input "--output" $j.output "--model" $j.model "--weights" $j.weights }}
{{- with $j.categories }}{{ $args = concat $args (list "--categories" .) }}{{ end }}
{{- if gt (int64 $j.batchSize) 0 }}{{ $args = concat $args (list "--batch-size" (toString (int64 $j.batchSize))) }}{{ end }}
{{- $device := ternary "cpu" $j.device .Values.cpuFallback.enabled }}
{{- $args = concat $args (list "--device" $device) }}
{{- if gt (int64 $j.numWorkers) 0 }}{{ $args = concat $args (list "--num-workers" (toString (int64 $j.numWorkers))) }}{{ end }}
{{- if gt (float64 $j.numGpusPerWorker) 0.0 }}{{ $args = concat $args (list "--num-gpus-per-worker" (toString $j.numGpusPerWorker)) }}{{ end }}
{{- $args = concat $args (list "--top-k" (toString (int64 $j.topK))) }}
{{- with $j.labelFromPath }}{{ $args = concat $args (list "--label-from-path" .) }}{{ end }}
{{- if gt (int64 $j.limit) 0 }}{{ $args = concat $args (list "--limit" (toString (int64 $j.limit))) }}{{ end }}
{{- if and $j.resume (not $j.overwrite) }}{{ $args = append $args "--resume" }}{{ end }}
{{- if $j.overwrite }}{{ $args = append $args "--overwrite" }}{{ end }}
{{- range $j.extraArgs }}{{ $args = append $args (toString .) }}{{ end }}
{{- toJson $args }}
{{- end }}

{{/*
The RayJob entrypoint: the argv above, each word shell-quoted, joined by spaces.
*/}}
{{- define "batchinfer.entrypoint" -}}
{{- $words := list }}
{{- range (include "batchinfer.jobArgs" . | fromJsonArray) }}
{{- $words = append $words (include "batchinfer.shquote" .) }}
{{- end }}
{{- join " " $words }}
{{- end }}

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
Worker group with workerDefaults applied: a key set in the group replaces the default.
Call with (dict "root" $ "group" $group); returns YAML.
*/}}
{{- define "batchinfer.workerGroup" -}}
{{- $g := deepCopy .root.Values.workerDefaults }}
{{- range $k, $v := .group }}
{{- $_ := set $g $k $v }}
{{- end }}
{{- if .root.Values.cpuFallback.enabled }}
{{- if and (hasKey .group "gpus") (gt (int64 .group.gpus) 0) }}
{{- fail (printf "workerGroups[%s].gpus is %v but cpuFallback.enabled is true: remove the group's gpus (or set it to 0), or turn cpuFallback off" .group.name .group.gpus) }}
{{- end }}
{{- $_ := set $g "gpus" 0 }}
{{- end }}
{{- $replicas := int64 (default 1 (get .group "replicas")) }}
{{- if hasKey .group "replicas" }}{{ $replicas = int64 .group.replicas }}{{ end }}
{{- $_ := set $g "replicas" $replicas }}
{{- $_ := set $g "minReplicas" (ternary (int64 .group.minReplicas) $replicas (hasKey .group "minReplicas")) }}
{{- $_ := set $g "maxReplicas" (ternary (int64 .group.maxReplicas) $replicas (hasKey .group "maxReplicas")) }}
{{- toYaml $g }}
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
metadata:
  labels:
    {{- include "batchinfer.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "ray-head" (printf "ray-worker-%s" (default "" $g.name)) $isHead }}
    {{- with $g.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $g.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "batchinfer.serviceAccountName" $root }}
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
  {{- with $g.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $isHead }}
      image: {{ include "batchinfer.image" $root }}
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
      volumeMounts:
        - name: dshm
          mountPath: /dev/shm
        - name: ray-tmp
          mountPath: /tmp/ray
  volumes:
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $g.shmSize | quote }}
    - name: ray-tmp
      emptyDir: {}
{{- end }}

{{/*
Cross-field checks the schema cannot express (mirroring KubeRay v1.7.0's RayJob validation),
each failing with a message that names the values to change.
*/}}
{{- define "batchinfer.validate" -}}
{{- $v := .Values }}
{{- $name := include "batchinfer.fullname" . }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the RayJob name %q (release name / fullnameOverride) must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter" $name) }}
{{- end }}
{{- if $v.cpuFallback.enabled }}
{{- if eq $v.job.device "cuda" }}
{{- fail "job.device is \"cuda\" but cpuFallback.enabled is true: set job.device to auto or cpu" }}
{{- end }}
{{- if gt (float64 $v.job.numGpusPerWorker) 0.0 }}
{{- fail (printf "job.numGpusPerWorker is %v but cpuFallback.enabled is true: set it to 0" $v.job.numGpusPerWorker) }}
{{- end }}
{{- end }}
{{- if not $v.workerGroups }}
{{- fail "workerGroups must list at least one worker group (the head runs no tasks)" }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $group := $v.workerGroups }}
{{- if hasKey $seen $group.name }}
{{- fail (printf "workerGroups: the name %q is used twice; worker group names must be unique" $group.name) }}
{{- end }}
{{- $_ := set $seen $group.name true }}
{{- $g := include "batchinfer.workerGroup" (dict "root" $ "group" $group) | fromYaml }}
{{- if gt (int64 $g.minReplicas) (int64 $g.maxReplicas) }}
{{- fail (printf "workerGroups[%s]: minReplicas (%v) is greater than maxReplicas (%v)" $group.name $g.minReplicas $g.maxReplicas) }}
{{- end }}
{{- if or (lt (int64 $g.replicas) (int64 $g.minReplicas)) (gt (int64 $g.replicas) (int64 $g.maxReplicas)) }}
{{- fail (printf "workerGroups[%s]: replicas (%v) must lie between minReplicas (%v) and maxReplicas (%v)" $group.name $g.replicas $g.minReplicas $g.maxReplicas) }}
{{- end }}
{{- end }}
{{- $rj := $v.rayJob }}
{{- if and (not $rj.shutdownAfterJobFinishes) (gt (int64 $rj.ttlSecondsAfterFinished) 0) }}
{{- fail "rayJob.ttlSecondsAfterFinished needs rayJob.shutdownAfterJobFinishes: true (set the TTL to 0 or turn shutdown on)" }}
{{- end }}
{{- if and (or $rj.suspend $rj.queueName) (not $rj.shutdownAfterJobFinishes) }}
{{- fail "rayJob.suspend / rayJob.queueName (Kueue) need rayJob.shutdownAfterJobFinishes: true" }}
{{- end }}
{{- if and $rj.deletionStrategy.deletionRules $rj.shutdownAfterJobFinishes }}
{{- fail "rayJob.deletionStrategy.deletionRules and rayJob.shutdownAfterJobFinishes: true are mutually exclusive (KubeRay): set shutdownAfterJobFinishes: false and ttlSecondsAfterFinished: 0, or use onSuccess/onFailure" }}
{{- end }}
{{- if and $rj.deletionStrategy.deletionRules (or $rj.deletionStrategy.onSuccess $rj.deletionStrategy.onFailure) }}
{{- fail "rayJob.deletionStrategy: use either deletionRules or onSuccess+onFailure, not both" }}
{{- end }}
{{- end }}
