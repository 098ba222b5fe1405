package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
)

// probeTimeout bounds each sidecar probe.
const probeTimeout = 5 * time.Second

// statefulSetOf returns the name of the StatefulSet that owns pod, if any.
func statefulSetOf(pod *corev1.Pod) string {
	if ref := metav1.GetControllerOf(pod); ref != nil && ref.Kind == "StatefulSet" {
		if gv, err := schemaGroup(ref.APIVersion); err == nil && gv == appsv1.GroupName {
			return ref.Name
		}
	}
	return ""
}

func schemaGroup(apiVersion string) (string, error) {
	for i := 0; i < len(apiVersion); i++ {
		if apiVersion[i] == '/' {
			return apiVersion[:i], nil
		}
	}
	return "", fmt.Errorf("no group in %q", apiVersion)
}

// podPolicyField indexes the cached pods by the BackupPolicy their
// amber.dev/policy annotation names, so a reconcile reads (and copies out
// of the cache) the pods of its own policy, not every opted-in pod of its
// namespace: with hundreds of StatefulSets in one namespace, listing the
// whole namespace in every reconcile made the work grow with the square
// of the namespace's size (controller/internal/scale measures it).
const podPolicyField = "amber.dev/policy-annotation"

// IndexPods registers the pod index that the BackupPolicy and Backup
// reconcilers list by, on mgr's cache; call it once, before mgr starts.
func IndexPods(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podPolicyField, func(o client.Object) []string {
		if name := o.GetAnnotations()[inject.AnnotationPolicy]; name != "" {
			return []string{name}
		}
		return nil
	})
}

// policyPods returns the injected, running pods in namespace that carry
// policy, by StatefulSet name, each list sorted by pod name. c is the
// manager's cached client, with IndexPods registered.
func policyPods(ctx context.Context, c client.Reader, namespace, policy string) (map[string][]*corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingFields{podPolicyField: policy}); err != nil {
		return nil, fmt.Errorf("list pods in %s: %w", namespace, err)
	}
	out := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Annotations[inject.AnnotationPolicy] != policy || p.DeletionTimestamp != nil {
			continue
		}
		sts := statefulSetOf(p)
		if sts == "" {
			continue
		}
		if _, ok := out[sts]; !ok {
			out[sts] = nil
		}
		if _, injected := p.Annotations[inject.AnnotationInjected]; !injected || p.Status.PodIP == "" {
			continue
		}
		out[sts] = append(out[sts], p)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	return out, nil
}

// probeAll probes every pod's sidecar at once; with withStatus, it also
// reads the status of those that archive, on the same connection.
func probeAll(ctx context.Context, d sidecarapi.Dialer, pods []*corev1.Pod, withStatus bool) []Candidate {
	out := make([]Candidate, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		out[i].Pod = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			sc, err := d.Dial(ctx, p)
			if err != nil {
				out[i].Err = err
				return
			}
			defer sc.Close()
			out[i].Probe, out[i].Err = sc.Probe(ctx)
			if withStatus && out[i].Err == nil && out[i].Probe.Archiving {
				if st, err := sc.Status(ctx); err == nil {
					out[i].Status = &st
				}
			}
		}()
	}
	wg.Wait()
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
