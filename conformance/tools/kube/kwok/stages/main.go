// Command stages prints the stages kwok plays, as one config file: the
// ones kwokctl gives kwok by default (a node becomes Ready at once and
// heartbeats through its lease; a pod becomes Running with an IP at once,
// completes and is deleted as its kubelet would). A bare kwok has none,
// so build.sh writes them next to the binary as kwok-stages.yaml, from the
// kwok version pinned in go.mod.
package main

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodelease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

func main() {
	docs := []string{
		nodefast.DefaultNodeInit,
		nodelease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Println("---")
		}
		fmt.Println(strings.TrimRight(d, "\n"))
	}
}
