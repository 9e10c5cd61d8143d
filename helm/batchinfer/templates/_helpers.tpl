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
A value without its neutral parts, as JSON: map keys whose value is 0, "", false, null or empty
(after pruning) are left out, recursively. A value added at its neutral default then leaves the run
identity as it was. Call with (dict "value" <any>); toJson sorts map keys.
*/}}
{{- define "batchinfer.pruned" -}}
{{- $v := .value }}
{{- if kindIs "map" $v }}
{{- $out := dict }}
{{- range $k, $x := $v }}
{{- $p := include "batchinfer.pruned" (dict "value" $x) | fromJson }}
{{- if $p.v }}{{ $_ := set $out $k $p.v }}{{ end }}
{{- end }}
{{- dict "v" $out | toJson }}
{{- else if kindIs "slice" $v }}
{{- $out := list }}
{{- range $v }}{{ $out = append $out (include "batchinfer.pruned" (dict "value" .) | fromJson).v }}{{ end }}
{{- dict "v" $out | toJson }}
{{- else }}
{{- dict "v" $v | toJson }}
{{- end }}
{{- end }}

{{/*
What changes the run, as JSON: the job values (but runId), the device switch, the storage settings
(s3.*), the image (image.*), the containers' extra environment, the Ray version, and the resources
of the head and of every worker group (workerDefaults applied; placement, labels and annotations
left out, as are the RayJob's lifecycle values). Neutral values are pruned (batchinfer.pruned).
*/}}
{{- define "batchinfer.runDefinition" -}}
{{- $v := .Values }}
{{- $groups := list }}
{{- range $v.workerGroups }}
{{- $g := include "batchinfer.workerGroup" (dict "root" $ "group" .) | fromYaml }}
{{- $groups = append $groups (pick $g "name" "cpu" "memory" "shmSize" "rayStartParams" "gpus" "gpuResourceName" "replicas" "minReplicas" "maxReplicas") }}
{{- end }}
{{- $run := dict "job" (omit $v.job "runId") "cpuFallback" $v.cpuFallback.enabled "s3" $v.s3 "image" $v.image "extraEnv" $v.extraEnv "rayVersion" $v.rayVersion "head" (pick $v.head "cpu" "memory" "shmSize" "rayStartParams" "useCpuImage") "workerGroups" $groups "submitterImage" $v.rayJob.submitter.useCpuImage }}
{{- (include "batchinfer.pruned" (dict "value" $run) | fromJson).v | toJson }}
{{- end }}

{{/*
The run identity: job.runId, or a short hash of what changes the run (batchinfer.runDefinition).
A numeric id (--set job.runId=$(date +%Y%m%d) parses as a number) is written as an integer.
*/}}
{{- define "batchinfer.runId" -}}
{{- $id := .Values.job.runId }}
{{- if or (kindIs "float64" $id) (kindIs "int64" $id) (kindIs "int" $id) }}{{ $id = printf "%d" (int64 $id) }}{{ end }}
{{- $id | default (include "batchinfer.runDefinition" . | sha256sum | trunc 8) }}
{{- end }}

{{/*
The RayJob name: <fullname>-<runId>[-<rerun>], at most 47 characters (KubeRay's MaxRayJobNameLength).
rerun changes the name alone (not the output prefix): a new RayJob for the same run. KubeRay names the
submitter Job after it, and the RayCluster <name>-<5 random characters>.
*/}}
{{- define "batchinfer.rayJobName" -}}
{{- $suffix := include "batchinfer.runId" . }}
{{- $rerun := .Values.rerun }}
{{- if or (kindIs "float64" $rerun) (kindIs "int64" $rerun) (kindIs "int" $rerun) }}{{ $rerun = printf "%d" (int64 $rerun) }}{{ end }}
{{- with $rerun }}{{ $suffix = printf "%s-%s" $suffix . }}{{ end }}
{{- printf "%s-%s" (include "batchinfer.fullname" . | trunc (int (sub 46 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/*
The output prefix of this run: <job.output>/<runId>/ with job.outputPerRun, else job.output.
*/}}
{{- define "batchinfer.output" -}}
{{- if .Values.job.outputPerRun }}
{{- printf "%s/%s/" (trimSuffix "/" .Values.job.output) (include "batchinfer.runId" .) }}
{{- else }}
{{- .Values.job.output }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "batchinfer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the release and the chart's own name label. Not app.kubernetes.io/name: on Ray pods
that label belongs to KubeRay (see batchinfer.podLabels).
*/}}
{{- define "batchinfer.selectorLabels" -}}
batchinfer.io/name: {{ include "batchinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every pod template (head, workers, submitter). None of the labels KubeRay v1.7.0 gives
Ray pods (common/pod.go labelPod): a template label replaces KubeRay's value on the pod, while the
RayJob's head Service <rayjob>-head-svc still selects KubeRay's values (common/job.go
BuildHeadServiceForRayJob -> common/service.go BuildServiceForHeadPod, HeadServiceLabels:
app.kubernetes.io/name=kuberay), and would have no endpoints.
*/}}
{{- define "batchinfer.podLabels" -}}
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
Common labels of the chart's own objects: the pod labels plus app.kubernetes.io/name.
*/}}
{{- define "batchinfer.labels" -}}
app.kubernetes.io/name: {{ include "batchinfer.name" . }}
{{ include "batchinfer.podLabels" . }}
{{- end }}

{{/*
Annotations that keep Karpenter and the Cluster Autoscaler from disrupting a pod's node (the head's
and the submitter's, disruptionProtection.annotations), as YAML; empty when off.
*/}}
{{- define "batchinfer.disruptionAnnotations" -}}
{{- if .Values.disruptionProtection.annotations }}
karpenter.sh/do-not-disrupt: "true"
cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
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
No public image is published: image.repository is required, and building and pushing it is step one.
*/}}
{{- define "batchinfer.image" -}}
{{- $tag := .Values.image.tag }}
{{- if not $tag }}
{{- $tag = .Chart.AppVersion }}
{{- if .Values.cpuFallback.enabled }}
{{- $tag = printf "%s-cpu" $tag }}
{{- end }}
{{- end }}
{{- if not .Values.image.repository }}
{{- $make := ternary "make image-cpu IMAGE_CPU" "make image IMAGE" .Values.cpuFallback.enabled }}
{{- fail (printf "image.repository is not set: no public batchinfer image exists, so step one is to build and push yours (%s=<registry>/batchinfer:%s && docker push <registry>/batchinfer:%s), then pass --set image.repository=<registry>/batchinfer" $make $tag $tag) }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
Image of one pod: (dict "root" $ "cpu" <bool>). cpu: the CPU-only variant <tag or appVersion>-cpu
(under cpuFallback every pod already uses it).
*/}}
{{- define "batchinfer.podImage" -}}
{{- if and .cpu (not .root.Values.cpuFallback.enabled) }}
{{- printf "%s:%s-cpu" .root.Values.image.repository (default .root.Chart.AppVersion .root.Values.image.tag) }}
{{- else }}
{{- include "batchinfer.image" .root }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the head pod. With autoscaling, KubeRay v1.7.0 binds its autoscaler Role (pods
get/list/watch/patch, rayclusters get/patch) to the head pod's ServiceAccount (common/rbac.go
BuildRoleBinding, utils.GetHeadGroupServiceAccountName), so the head gets its own one and the
workers' and submitter's ServiceAccount stays without Kubernetes API rights. KubeRay passes the
name through utils.CheckName (at most 50 characters, starting with a letter): the default keeps it so.
*/}}
{{- define "batchinfer.headServiceAccountName" -}}
{{- $sa := .Values.autoscalerServiceAccount }}
{{- if and .Values.autoscaling.enabled $sa.create }}
{{- default (printf "%s-autoscaler" (include "batchinfer.fullname" . | trunc 39 | trimSuffix "-")) $sa.name }}
{{- else if and .Values.autoscaling.enabled $sa.name }}
{{- $sa.name }}
{{- else }}
{{- include "batchinfer.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity (8Gi, 512Mi, 2G, 1073741824) in bytes, as an integer string.
*/}}
{{- define "batchinfer.bytes" -}}
{{- $q := toString . }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$" $q) }}
{{- fail (printf "cannot read %q as a memory size: use e.g. 512Mi, 8Gi or a number of bytes" $q) }}
{{- end }}
{{- $num := float64 (regexFind "^[0-9]+(\\.[0-9]+)?" $q) }}
{{- $unit := trimPrefix (regexFind "^[0-9]+(\\.[0-9]+)?" $q) $q }}
{{- $mult := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- printf "%.0f" (floor (mulf $num (get $mult $unit))) }}
{{- end }}

{{/*
rayStartParams of one Ray group, as YAML: (dict "root" $ "group" <head values or merged worker group>).
With an explicit shmSize, object-store-memory = min(30% of the memory limit, 95% of shmSize): the
store Ray would pick (Ray 2.60 ray._private.utils.resolve_object_store_memory: 30% of memory),
capped so that it fits in /dev/shm (otherwise ray._private.services.determine_plasma_store_config
puts it in /tmp, on disk). An explicit object-store-memory must fit in /dev/shm: the declared
shmSize, or the memory limit that KubeRay sizes its injected /dev/shm to.
*/}}
{{- define "batchinfer.rayStartParams" -}}
{{- $g := .group }}
{{- $params := deepCopy (default (dict) $g.rayStartParams) }}
{{- $name := default "head" $g.name }}
{{- $shm := include "batchinfer.bytes" (default $g.memory $g.shmSize) | float64 }}
{{- if hasKey $params "object-store-memory" }}
{{- $store := get $params "object-store-memory" | float64 }}
{{- if gt $store $shm }}
{{- fail (printf "%s: rayStartParams object-store-memory (%s bytes) does not fit in /dev/shm (%s, the group's %s): Ray would put the object store on disk. Lower it or raise the size" $name (get $params "object-store-memory") (default $g.memory $g.shmSize) (ternary "shmSize" "memory limit" (not (empty $g.shmSize)))) }}
{{- end }}
{{- else if $g.shmSize }}
{{- $default := mulf (include "batchinfer.bytes" $g.memory | float64) 0.3 }}
{{- $_ := set $params "object-store-memory" (printf "%.0f" (floor (min $default (mulf $shm 0.95)))) }}
{{- end }}
{{- toYaml $params }}
{{- end }}

{{/*
The largest number of inference actors the worker groups can hold at maxReplicas, for
`--num-workers 1-MAX`: per GPU group maxReplicas x floor(gpus / GPUs per actor); under cpuFallback
one CPU actor per worker pod. Fails when no group can hold one.
*/}}
{{- define "batchinfer.maxInferenceActors" -}}
{{- $perActor := 1.0 }}
{{- if gt (float64 .Values.job.numGpusPerWorker) 0.0 }}{{ $perActor = float64 .Values.job.numGpusPerWorker }}{{ end }}
{{- $total := 0 }}
{{- range .Values.workerGroups }}
{{- $g := include "batchinfer.workerGroup" (dict "root" $ "group" .) | fromYaml }}
{{- if $.Values.cpuFallback.enabled }}
{{- $total = add $total (int64 $g.maxReplicas) }}
{{- else }}
{{- $total = add $total (mul (int64 $g.maxReplicas) (int64 (floor (divf (float64 $g.gpus) $perActor)))) }}
{{- end }}
{{- end }}
{{- if lt (int64 $total) 1 }}
{{- if .Values.cpuFallback.enabled }}
{{- fail "no worker group can run an inference actor: give a worker group maxReplicas >= 1" }}
{{- else }}
{{- fail (printf "no worker group can run an inference actor: give a group gpus >= job.numGpusPerWorker (%v) and maxReplicas >= 1, or set cpuFallback.enabled=true" $perActor) }}
{{- end }}
{{- end }}
{{- $total }}
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
The job's argv as a list (before quoting). Every job value is a `batchinfer run` flag of the same
name in kebab-case (batchSize -> --batch-size): true adds the flag, false, 0 and "" leave it out, any
other value is passed after it; so a new flag needs a value in values.yaml (and its schema), not a
line here. Handled apart: runId, outputPerRun and extraArgs (chart-only), output (per run),
device (auto -> cuda), numWorkers (0 -> the autoscaling range) and resume (not with overwrite).
*/}}
{{- define "batchinfer.jobArgs" -}}
{{- $j := .Values.job }}
{{- $args := list "batchinfer" "run" "--input" $j.input "--output" (include "batchinfer.output" .) "--model" $j.model "--weights" $j.weights }}
{{- /* auto -> cuda: GPU groups may still be scaling up when the driver starts, and --device cuda waits
     for them (pending GPU demand the autoscaler acts on) where auto would see 0 GPUs and pick the CPU */}}
{{- $device := ternary "cpu" (ternary "cuda" $j.device (eq $j.device "auto")) .Values.cpuFallback.enabled }}
{{- $args = concat $args (list "--device" $device) }}
{{- if gt (int64 $j.numWorkers) 0 }}{{ $args = concat $args (list "--num-workers" (toString (int64 $j.numWorkers))) }}
{{- else }}{{ $args = concat $args (list "--num-workers" (printf "1-%s" (include "batchinfer.maxInferenceActors" .))) }}{{ end }}
{{- $apart := list "runId" "outputPerRun" "extraArgs" "input" "output" "model" "weights" "device" "numWorkers" }}
{{- if $j.overwrite }}{{ $apart = append $apart "resume" }}{{ end }}
{{- range $key, $value := $j }}
{{- if has $key $apart }}{{ continue }}{{ end }}
{{- $flag := printf "--%s" (kebabcase $key) }}
{{- if kindIs "bool" $value }}
{{- if $value }}{{ $args = append $args $flag }}{{ end }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{- if ne (float64 $value) 0.0 }}
{{- $text := ternary (printf "%d" (int64 $value)) (toString $value) (eq (float64 $value) (floor $value)) }}
{{- $args = concat $args (list $flag $text) }}
{{- end }}
{{- else if $value }}
{{- $args = concat $args (list $flag (toString $value)) }}
{{- end }}
{{- end }}
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
{{- if eq (int64 $g.gpus) 0 }}
{{- $gpuKey := $g.gpuResourceName }}
{{- $kept := list }}
{{- range $g.tolerations }}{{ if ne (get . "key") $gpuKey }}{{ $kept = append $kept . }}{{ end }}{{ end }}
{{- $_ := set $g "tolerations" $kept }}
{{- end }}
{{- $replicas := int64 (default 1 (get .group "replicas")) }}
{{- if hasKey .group "replicas" }}{{ $replicas = int64 .group.replicas }}{{ end }}
{{- $_ := set $g "replicas" $replicas }}
{{- $_ := set $g "minReplicas" (ternary (int64 .group.minReplicas) $replicas (hasKey .group "minReplicas")) }}
{{- $_ := set $g "maxReplicas" (ternary (int64 .group.maxReplicas) $replicas (hasKey .group "maxReplicas")) }}
{{- toYaml $g }}
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

{{/*
Cross-field checks the schema cannot express (mirroring KubeRay v1.7.0's RayJob validation),
each failing with a message that names the values to change.
*/}}
{{- define "batchinfer.validate" -}}
{{- $v := .Values }}
{{- $name := include "batchinfer.rayJobName" . }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the RayJob name %q (release name / fullnameOverride, then job.runId) must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter" $name) }}
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
{{- /* Pod labels leave KubeRay's own Ray pod labels alone (see batchinfer.podLabels). */}}
{{- $kuberayKeys := list "app.kubernetes.io/name" "app.kubernetes.io/created-by" "ray.io/cluster" "ray.io/node-type" "ray.io/group" "ray.io/identifier" "ray.io/is-ray-node" }}
{{- $podLabels := dict "commonLabels" $v.commonLabels "head.labels" $v.head.labels "workerDefaults.labels" $v.workerDefaults.labels }}
{{- range $v.workerGroups }}{{ $_ := set $podLabels (printf "workerGroups[%s].labels" .name) .labels }}{{ end }}
{{- range $where, $labels := $podLabels }}
{{- range $key := keys (default (dict) $labels) | sortAlpha }}
{{- if has $key $kuberayKeys }}
{{- fail (printf "%s sets %s: KubeRay sets that label on the Ray pods and selects them by it (the head Service would lose the head pod): remove it" $where $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Every phase has a bound and the whole-run bound holds the others: the pre-running deadline
       (cluster start) and the driver's wait for a GPU node (job.nodeWait) both fit inside
       activeDeadlineSeconds, which KubeRay v1.7.0 checks in Initializing and Running alike
       (rayjob_controller.go checkActiveDeadlineAndUpdateStatusIfNeeded). */}}
{{- $active := int64 $v.rayJob.activeDeadlineSeconds }}
{{- $phases := add (int64 $v.rayJob.preRunningDeadlineSeconds) (int64 $v.job.nodeWait) }}
{{- if and (gt $active 0) (le $active $phases) }}
{{- fail (printf "rayJob.activeDeadlineSeconds (%d) must exceed rayJob.preRunningDeadlineSeconds + job.nodeWait (%d): the whole-run deadline would end the run while it still waits for its cluster or GPU node. Raise it (the run time on top), or lower the others" $active $phases) }}
{{- end }}
{{- /* KubeRay v1.7.0 ray-operator/controllers/ray/utils/validation.go: ValidateRayJobSpec,
       validateDeletionConfiguration, validateDeletionRules, validateLegacyDeletionPolicies. */}}
{{- $rj := $v.rayJob }}
{{- $ds := default (dict) $rj.deletionStrategy }}
{{- $rules := $ds.deletionRules }}
{{- $legacy := or $ds.onSuccess $ds.onFailure }}
{{- if and (not $rj.shutdownAfterJobFinishes) (gt (int64 $rj.ttlSecondsAfterFinished) 0) }}
{{- fail "rayJob.ttlSecondsAfterFinished needs rayJob.shutdownAfterJobFinishes: true (set the TTL to 0 or turn shutdown on)" }}
{{- end }}
{{- if and (or $rj.suspend $rj.queueName) (not $rj.shutdownAfterJobFinishes) }}
{{- fail "rayJob.suspend / rayJob.queueName (Kueue) need rayJob.shutdownAfterJobFinishes: true (the default), so no rayJob.deletionStrategy.deletionRules" }}
{{- end }}
{{- if and $rules $rj.shutdownAfterJobFinishes }}
{{- fail "rayJob.deletionStrategy.deletionRules and rayJob.shutdownAfterJobFinishes: true are mutually exclusive (KubeRay): with rules set shutdownAfterJobFinishes: false and ttlSecondsAfterFinished: 0, or drop the rules (rayJob.deletionStrategy=null: shutdownAfterJobFinishes deletes the cluster on every end, STOPPED included)" }}
{{- end }}
{{- if and $rules $legacy }}
{{- fail "rayJob.deletionStrategy: use either deletionRules or onSuccess+onFailure, not both (set rayJob.deletionStrategy.deletionRules=null to use onSuccess/onFailure)" }}
{{- end }}
{{- $ttls := dict }}
{{- range $i, $rule := $rules }}
{{- if and $v.autoscaling.enabled (eq $rule.policy "DeleteWorkers") }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d]: DeleteWorkers is not supported with autoscaling.enabled (KubeRay): use DeleteCluster, or turn autoscaling off" $i) }}
{{- end }}
{{- if and (hasKey $rule.condition "jobStatus") (hasKey $rule.condition "jobDeploymentStatus") }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d].condition: set jobStatus or jobDeploymentStatus, not both" $i) }}
{{- end }}
{{- if not (or (hasKey $rule.condition "jobStatus") (hasKey $rule.condition "jobDeploymentStatus")) }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d].condition: set exactly one of jobStatus and jobDeploymentStatus" $i) }}
{{- end }}
{{- $when := ternary (printf "jobStatus %v" $rule.condition.jobStatus) (printf "jobDeploymentStatus %v" $rule.condition.jobDeploymentStatus) (hasKey $rule.condition "jobStatus") }}
{{- $byPolicy := get $ttls $when | default (dict) }}
{{- if hasKey $byPolicy $rule.policy }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d]: a second %s rule for %s" $i $rule.policy $when) }}
{{- end }}
{{- $_ := set $byPolicy $rule.policy (int64 (default 0 $rule.condition.ttlSeconds)) }}
{{- $_ := set $ttls $when $byPolicy }}
{{- end }}
{{- /* validateTTLConsistency: per condition, TTLs of DeleteWorkers <= DeleteCluster <= DeleteSelf. */}}
{{- range $when, $byPolicy := $ttls }}
{{- $previous := "" }}
{{- range list "DeleteWorkers" "DeleteCluster" "DeleteSelf" }}
{{- if hasKey $byPolicy . }}
{{- if and $previous (lt (get $byPolicy .) (get $byPolicy $previous)) }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules for %s: the %s ttlSeconds (%v) must not be below the %s one (%v): KubeRay deletes workers, then the cluster, then the RayJob" $when . (get $byPolicy .) $previous (get $byPolicy $previous)) }}
{{- end }}
{{- $previous = . }}
{{- end }}
{{- end }}
{{- end }}
{{- if $legacy }}
{{- $policies := list $ds.onSuccess.policy $ds.onFailure.policy }}
{{- if and $v.autoscaling.enabled (has "DeleteWorkers" $policies) }}
{{- fail "rayJob.deletionStrategy onSuccess/onFailure DeleteWorkers is not supported with autoscaling.enabled (KubeRay): use DeleteCluster, or turn autoscaling off" }}
{{- end }}
{{- if and $rj.shutdownAfterJobFinishes (has "DeleteNone" $policies) }}
{{- fail "rayJob.deletionStrategy onSuccess/onFailure DeleteNone contradicts rayJob.shutdownAfterJobFinishes: true (KubeRay): set shutdownAfterJobFinishes: false and ttlSecondsAfterFinished: 0, or choose another policy" }}
{{- end }}
{{- end }}
{{- end }}
