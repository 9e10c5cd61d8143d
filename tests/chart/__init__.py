"""Chart tests: the Helm chart in helm/batchinfer and the manifests in k8s/."""
