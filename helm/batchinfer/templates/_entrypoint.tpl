{{/* The RayJob entrypoint: `batchinfer run` and its flags, from the job values. */}}

{{/*
The largest number of inference actors the worker groups can hold at maxReplicas, for
`--num-workers 1-MAX`: per GPU group maxReplicas x floor(gpus / GPUs per actor); under cpuFallback
one CPU actor per worker pod. Fails when no group can hold one (arithmetic over the groups, which
the schema cannot express).
*/}}
{{- define "batchinfer.maxInferenceActors" -}}
{{- $perActor := 1.0 }}
{{- if gt (float64 .Values.job.numGpusPerWorker) 0.0 }}{{ $perActor = float64 .Values.job.numGpusPerWorker }}{{ end }}
{{- $total := 0 }}
{{- range $g := include "batchinfer.workerGroups" . | fromJsonArray }}
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
