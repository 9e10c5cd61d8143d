{{/*
The checks values.schema.json cannot express, each failing with a message that names the values to
change. Everything else (types, enums, minimums, patterns, required keys, KubeRay's own pod labels,
cpuFallback without GPUs, the RayJob's deletion and shutdown combinations of KubeRay v1.7.0
ray-operator/controllers/ray/utils/validation.go) is in the schema, which Helm applies first.
*/}}
{{- define "batchinfer.validate" -}}
{{- $v := .Values }}
{{- /* A computed name (release name, fullnameOverride, runId, rerun): KubeRay ValidateRayJobMetadata. */}}
{{- $name := include "batchinfer.rayJobName" . }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the RayJob name %q (release name / fullnameOverride, then job.runId) must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter" $name) }}
{{- end }}
{{- /* Comparisons between a group's values, after its defaults (min/maxReplicas default to replicas). */}}
{{- range $g := include "batchinfer.workerGroups" . | fromJsonArray }}
{{- if gt (int64 $g.minReplicas) (int64 $g.maxReplicas) }}
{{- fail (printf "workerGroups.%s: minReplicas (%v) is greater than maxReplicas (%v)" $g.name $g.minReplicas $g.maxReplicas) }}
{{- end }}
{{- if or (lt (int64 $g.replicas) (int64 $g.minReplicas)) (gt (int64 $g.replicas) (int64 $g.maxReplicas)) }}
{{- fail (printf "workerGroups.%s: replicas (%v) must lie between minReplicas (%v) and maxReplicas (%v)" $g.name $g.replicas $g.minReplicas $g.maxReplicas) }}
{{- end }}
{{- end }}
{{- /* A sum: every phase has a bound and the whole-run bound holds the others. The pre-running
       deadline (cluster start) and the driver's wait for a GPU node (job.nodeWait) both fit inside
       activeDeadlineSeconds, which KubeRay v1.7.0 checks in Initializing and Running alike
       (rayjob_controller.go checkActiveDeadlineAndUpdateStatusIfNeeded). */}}
{{- $active := int64 $v.rayJob.activeDeadlineSeconds }}
{{- $phases := add (int64 $v.rayJob.preRunningDeadlineSeconds) (int64 $v.job.nodeWait) }}
{{- if and (gt $active 0) (le $active $phases) }}
{{- fail (printf "rayJob.activeDeadlineSeconds (%d) must exceed rayJob.preRunningDeadlineSeconds + job.nodeWait (%d): the whole-run deadline would end the run while it still waits for its cluster or GPU node. Raise it (the run time on top), or lower the others" $active $phases) }}
{{- end }}
{{- /* Comparisons across deletion rules (KubeRay v1.7.0 utils/validation.go validateDeletionRules:
       one rule per condition and policy; validateTTLConsistency: per condition, the TTLs of
       DeleteWorkers <= DeleteCluster <= DeleteSelf). */}}
{{- $ttls := dict }}
{{- range $i, $rule := (default (dict) $v.rayJob.deletionStrategy).deletionRules }}
{{- $when := ternary (printf "jobStatus %v" $rule.condition.jobStatus) (printf "jobDeploymentStatus %v" $rule.condition.jobDeploymentStatus) (hasKey $rule.condition "jobStatus") }}
{{- $byPolicy := get $ttls $when | default (dict) }}
{{- if hasKey $byPolicy $rule.policy }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d]: a second %s rule for %s" $i $rule.policy $when) }}
{{- end }}
{{- $_ := set $byPolicy $rule.policy (int64 (default 0 $rule.condition.ttlSeconds)) }}
{{- $_ := set $ttls $when $byPolicy }}
{{- end }}
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
{{- end }}
