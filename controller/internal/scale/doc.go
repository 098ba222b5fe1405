// Package scale measures amber-controller against many StatefulSets: a
// real etcd and kube-apiserver (k8stest), a node and its pods faked by
// kwok (Running, with pod IPs, no containers), every pod injected by the
// real webhook, and a stub of the sidecar API. Its test starts the
// controller in a process of its own (the test binary run again), times
// it from start until every StatefulSet has its archiver and every
// BackupPolicy is Ready, and reads the process's peak RSS and the API
// requests it made per reconcile.
//
// `make test` runs it at 30 StatefulSets; `make bench` (docs/bench.sh) at
// 300, setting AMBER_SCALE_STATEFULSETS and AMBER_SCALE_REPORT (the
// report to write its section into). The package holds tests only.
package scale
