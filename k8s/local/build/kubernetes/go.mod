// Build module for the local cluster's Kubernetes binaries (k8s/local/cluster.sh builds from it).
// k8s.io/kubernetes requires its staging modules at v0.0.0 with replace directives into a staging/
// folder that its module zip does not hold; here each is replaced by its published release instead.
module batchinfer.local/build/kubernetes

go 1.25.0

require k8s.io/kubernetes v1.35.4

replace (
	k8s.io/api v0.0.0 => k8s.io/api v0.35.4
	k8s.io/apiextensions-apiserver v0.0.0 => k8s.io/apiextensions-apiserver v0.35.4
	k8s.io/apimachinery v0.0.0 => k8s.io/apimachinery v0.35.4
	k8s.io/apiserver v0.0.0 => k8s.io/apiserver v0.35.4
	k8s.io/cli-runtime v0.0.0 => k8s.io/cli-runtime v0.35.4
	k8s.io/client-go v0.0.0 => k8s.io/client-go v0.35.4
	k8s.io/cloud-provider v0.0.0 => k8s.io/cloud-provider v0.35.4
	k8s.io/cluster-bootstrap v0.0.0 => k8s.io/cluster-bootstrap v0.35.4
	k8s.io/code-generator v0.0.0 => k8s.io/code-generator v0.35.4
	k8s.io/component-base v0.0.0 => k8s.io/component-base v0.35.4
	k8s.io/component-helpers v0.0.0 => k8s.io/component-helpers v0.35.4
	k8s.io/controller-manager v0.0.0 => k8s.io/controller-manager v0.35.4
	k8s.io/cri-api v0.0.0 => k8s.io/cri-api v0.35.4
	k8s.io/cri-client v0.0.0 => k8s.io/cri-client v0.35.4
	k8s.io/csi-translation-lib v0.0.0 => k8s.io/csi-translation-lib v0.35.4
	k8s.io/dynamic-resource-allocation v0.0.0 => k8s.io/dynamic-resource-allocation v0.35.4
	k8s.io/endpointslice v0.0.0 => k8s.io/endpointslice v0.35.4
	k8s.io/externaljwt v0.0.0 => k8s.io/externaljwt v0.35.4
	k8s.io/kms v0.0.0 => k8s.io/kms v0.35.4
	k8s.io/kube-aggregator v0.0.0 => k8s.io/kube-aggregator v0.35.4
	k8s.io/kube-controller-manager v0.0.0 => k8s.io/kube-controller-manager v0.35.4
	k8s.io/kube-proxy v0.0.0 => k8s.io/kube-proxy v0.35.4
	k8s.io/kube-scheduler v0.0.0 => k8s.io/kube-scheduler v0.35.4
	k8s.io/kubectl v0.0.0 => k8s.io/kubectl v0.35.4
	k8s.io/kubelet v0.0.0 => k8s.io/kubelet v0.35.4
	k8s.io/metrics v0.0.0 => k8s.io/metrics v0.35.4
	k8s.io/mount-utils v0.0.0 => k8s.io/mount-utils v0.35.4
	k8s.io/pod-security-admission v0.0.0 => k8s.io/pod-security-admission v0.35.4
	k8s.io/sample-apiserver v0.0.0 => k8s.io/sample-apiserver v0.35.4
	k8s.io/sample-cli-plugin v0.0.0 => k8s.io/sample-cli-plugin v0.35.4
	k8s.io/sample-controller v0.0.0 => k8s.io/sample-controller v0.35.4
)
