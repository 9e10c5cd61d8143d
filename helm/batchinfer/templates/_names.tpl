{{/* Names, labels, ServiceAccounts and images. */}}

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
app.kubernetes.io/name=kuberay), and would have no endpoints. values.schema.json (definitions
podLabels) refuses those keys in commonLabels and every group's labels.
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
Container image: tag defaults to appVersion, "<appVersion>-cpu" under cpuFallback.
No public image is published: image.repository is required, and building and pushing it is step one.
Checked here, not by the schema (which could require a non-empty string): its message cannot say how
to get the image, and that depends on cpuFallback.
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
