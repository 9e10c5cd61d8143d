// Build module for the local cluster's etcd (k8s/local/cluster.sh builds from it): the etcd server
// module carries replace directives, which `go install module@version` refuses; as a dependency of
// this module they do not apply, and its requirements name published releases.
module batchinfer.local/build/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16
