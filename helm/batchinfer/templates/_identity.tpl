{{/* The run identity: what changes the run, its id, the RayJob name and the output prefix. */}}

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
The worker groups are a list in group-name order, each with its name: the JSON the chart wrote when
workerGroups was a list, so a run keeps its id across that change.
*/}}
{{- define "batchinfer.runDefinition" -}}
{{- $v := .Values }}
{{- $groups := list }}
{{- range (include "batchinfer.workerGroups" . | fromJsonArray) }}
{{- $groups = append $groups (pick . "name" "cpu" "memory" "shmSize" "rayStartParams" "gpus" "gpuResourceName" "replicas" "minReplicas" "maxReplicas") }}
{{- end }}
{{- $run := dict "job" (omit $v.job "runId") "cpuFallback" $v.cpuFallback.enabled "s3" $v.s3 "image" $v.image "extraEnv" $v.extraEnv "rayVersion" $v.rayVersion "head" (pick $v.head "cpu" "memory" "shmSize" "rayStartParams" "useCpuImage") "workerGroups" $groups "submitterImage" $v.rayJob.submitter.useCpuImage }}
{{- (include "batchinfer.pruned" (dict "value" $run) | fromJson).v | toJson }}
{{- end }}

{{/*
A number or string value as a name part: a numeric id (--set job.runId=$(date +%Y%m%d) parses as a
number) is written as an integer.
*/}}
{{- define "batchinfer.namePart" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}{{ printf "%d" (int64 .) }}{{ else if . }}{{ . }}{{ end }}
{{- end }}

{{/*
The run identity: job.runId, or a short hash of what changes the run (batchinfer.runDefinition).
*/}}
{{- define "batchinfer.runId" -}}
{{- include "batchinfer.namePart" .Values.job.runId | default (include "batchinfer.runDefinition" . | sha256sum | trunc 8) }}
{{- end }}

{{/*
The RayJob name: <fullname>-<runId>[-<rerun>], at most 47 characters (KubeRay's MaxRayJobNameLength).
rerun changes the name alone (not the output prefix): a new RayJob for the same run. KubeRay names the
submitter Job after it, and the RayCluster <name>-<5 random characters>.
*/}}
{{- define "batchinfer.rayJobName" -}}
{{- $suffix := include "batchinfer.runId" . }}
{{- with include "batchinfer.namePart" .Values.rerun }}{{ $suffix = printf "%s-%s" $suffix . }}{{ end }}
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
