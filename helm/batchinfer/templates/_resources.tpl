{{/*
Resources of the Ray groups: the worker groups with workerDefaults applied, and the one value the
chart computes from them, object-store-memory (the rule below; chart README, "Computed values").
*/}}

{{/*
The worker groups, as a JSON list in group-name order: each map entry of workerGroups with
workerDefaults applied (a key set in the group replaces the default, whole value), its key as
"name", replicas defaulting to 1 and minReplicas/maxReplicas to replicas. Under cpuFallback gpus is
0 (the schema refuses a group's own gpus there); a group without GPUs drops tolerations of
gpuResourceName.
*/}}
{{- define "batchinfer.workerGroups" -}}
{{- $groups := list }}
{{- range $name, $group := .Values.workerGroups }}
{{- if kindIs "map" $group }}{{/* null: a removed group, kept as null in a release's values (--reuse-values) */}}
{{- $g := deepCopy $.Values.workerDefaults }}
{{- range $k, $v := $group }}{{ $_ := set $g $k $v }}{{ end }}
{{- $_ := set $g "name" $name }}
{{- if $.Values.cpuFallback.enabled }}{{ $_ := set $g "gpus" 0 }}{{ end }}
{{- if eq (int64 $g.gpus) 0 }}
{{- $kept := list }}
{{- range $g.tolerations }}{{ if ne (get . "key") $g.gpuResourceName }}{{ $kept = append $kept . }}{{ end }}{{ end }}
{{- $_ := set $g "tolerations" $kept }}
{{- end }}
{{- $replicas := ternary (int64 $group.replicas) 1 (hasKey $group "replicas") }}
{{- $_ := set $g "replicas" $replicas }}
{{- $_ := set $g "minReplicas" (ternary (int64 $group.minReplicas) $replicas (hasKey $group "minReplicas")) }}
{{- $_ := set $g "maxReplicas" (ternary (int64 $group.maxReplicas) $replicas (hasKey $group "maxReplicas")) }}
{{- $groups = append $groups $g }}
{{- end }}
{{- end }}
{{- toJson $groups }}
{{- end }}

{{/*
A memory size in bytes, as a number: an integer, or a string the schema's definitions/memory
pattern admits (<number>[Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E]), so there is nothing left to reject here.
*/}}
{{- define "batchinfer.bytes" -}}
{{- if kindIs "string" . }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . }}
{{- $unit := trimPrefix $num . }}
{{- $mult := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- printf "%.0f" (floor (mulf (float64 $num) (get $mult $unit))) }}
{{- else }}
{{- printf "%.0f" (float64 .) }}
{{- end }}
{{- end }}

{{/*
rayStartParams of one Ray group, as YAML: (dict "group" <head values or a worker group>).

The object-store rule, the chart's one computed resource. KubeRay v1.7.0 passes Ray the container's
memory limit as --memory (common/pod.go generateRayStartCommand) but never object-store-memory, and
mounts an in-memory /dev/shm sized to the memory limit unless the pod has one (BuildPod ->
addEmptyDir). Ray 2.60 then picks 30% of the memory it sees, capped at max(10 GB, 95% of /dev/shm)
(ray._private.utils.resolve_object_store_memory), and puts a store larger than /dev/shm on disk
(ray._private.services.determine_plasma_store_config). So:
- no shmSize: the chart sets nothing; KubeRay's /dev/shm (= memory limit) holds Ray's 30%.
- shmSize set: object-store-memory = min(30% of memory, 95% of shmSize), i.e. Ray's own rule without
  its 10 GB floor, which a /dev/shm under ~10.5 GB could not hold.
- an explicit object-store-memory must fit in /dev/shm (shmSize, else the memory limit): checked here,
  not in the schema, because it compares a number with a parsed size.
*/}}
{{- define "batchinfer.rayStartParams" -}}
{{- $g := .group }}
{{- $params := deepCopy (default (dict) $g.rayStartParams) }}
{{- $shm := include "batchinfer.bytes" (default $g.memory $g.shmSize) | float64 }}
{{- if hasKey $params "object-store-memory" }}
{{- if gt (get $params "object-store-memory" | float64) $shm }}
{{- fail (printf "%s: rayStartParams object-store-memory (%s bytes) does not fit in /dev/shm (%s, the group's %s): Ray would put the object store on disk. Lower it or raise the size" (default "head" $g.name) (get $params "object-store-memory") (toString (default $g.memory $g.shmSize)) (ternary "shmSize" "memory limit" (not (empty $g.shmSize)))) }}
{{- end }}
{{- else if $g.shmSize }}
{{- $ray := mulf (include "batchinfer.bytes" $g.memory | float64) 0.3 }}
{{- $_ := set $params "object-store-memory" (printf "%.0f" (floor (min $ray (mulf $shm 0.95)))) }}
{{- end }}
{{- toYaml $params }}
{{- end }}
