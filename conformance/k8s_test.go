package conformance_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubeletRunsPods runs a PostgreSQL StatefulSet with an amber container
// beside it on the test bed's real kubelet: both containers become Ready, the
// data volume comes from the cluster's provisioner and is shared, the pod
// gets an address on the cluster's private network, a deleted pod comes back
// Ready, and teardown leaves nothing behind.
func TestKubeletRunsPods(t *testing.T) {
	t0 := time.Now()
	c := testbed.StartCluster(t, testbed.ClusterOptions{})
	t.Logf("cluster startup: %s", c.StartupTime.Round(100*time.Millisecond))

	images := t.TempDir()
	_, pg := testbed.BuildPostgresImage(t, images)
	_, amber := testbed.BuildAmberImage(t, images)
	c.LoadImage(t, pg)
	c.LoadImage(t, amber)

	ctx := context.Background()
	const ns, name = "default", "pg"
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, postgresStatefulSet(name, c.StorageClass), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create statefulset: %v", err)
	}
	t1 := time.Now()
	pod := c.WaitPodReady(t, ns, name+"-0", 3*time.Minute)
	t.Logf("pod %s Ready %s after creating the StatefulSet (%s since the test began)", pod.Name, time.Since(t1).Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
	checkPod(t, c, pod)

	pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-"+pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get claim: %v", err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || !strings.HasPrefix(pvc.Spec.VolumeName, "pvc-") {
		t.Fatalf("claim %s is %s bound to %q, want Bound to a provisioned volume", pvc.Name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}

	oldUID := pod.UID
	t2 := time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	again, err := c.WaitPod(ctx, ns, pod.Name, 3*time.Minute, func(p *corev1.Pod) bool {
		return p.UID != oldUID && testbed.PodReady(p)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, c.DescribePod(ctx, ns, pod.Name))
	}
	t.Logf("deleted pod came back Ready in %s", time.Since(t2).Round(100*time.Millisecond))
	checkPod(t, c, again)
	// The same claim, so PostgreSQL found its data directory from the first pod.
	for _, cs := range again.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("container %s restarted %d times", cs.Name, cs.RestartCount)
		}
	}

	dir := c.Dir
	if err := c.Stop(); err != nil {
		t.Fatalf("stop cluster: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Fatalf("after Stop, still on the machine: %s", strings.Join(left, "; "))
	}
	for _, name := range []string{c.Bridge, c.NodeInterface} {
		if _, err := net.InterfaceByName(name); err == nil {
			t.Errorf("interface %s still exists after Stop", name)
		}
	}
	if dir != "" && dirExists(dir) {
		t.Errorf("cluster directory %s still exists after Stop", dir)
	}
	t.Logf("whole test: %s", time.Since(t0).Round(100*time.Millisecond))
}

// checkPod asserts both containers are ready and the pod's address is on the
// cluster's pod network.
func checkPod(t *testing.T, c *testbed.Cluster, pod *corev1.Pod) {
	t.Helper()
	ready := map[string]bool{}
	for _, cs := range pod.Status.ContainerStatuses {
		ready[cs.Name] = cs.Ready
	}
	if !ready["postgres"] || !ready["amber"] || len(ready) != 2 {
		t.Fatalf("container readiness %v, want postgres and amber ready", ready)
	}
	ip := net.ParseIP(pod.Status.PodIP)
	if ip == nil || !c.PodCIDR.Contains(ip) {
		t.Fatalf("pod IP %q is not in the cluster's pod network %s", pod.Status.PodIP, c.PodCIDR)
	}
	if pod.Spec.NodeName != c.NodeName {
		t.Fatalf("pod ran on node %q, want %q", pod.Spec.NodeName, c.NodeName)
	}
}

func postgresStatefulSet(name, storageClass string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	uid := int64(testbed.PostgresImageUID)
	grace := int64(2)
	const pgdata = "/data/pgdata"
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptrTo(int32(1)),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					SecurityContext:               &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: ptrTo(true)},
					Containers: []corev1.Container{
						{
							Name:            "postgres",
							Image:           testbed.PostgresImageRef,
							ImagePullPolicy: corev1.PullNever,
							Command: []string{"/bin/sh", "-c", `set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then initdb --no-locale -E UTF8 -U postgres -A trust -D "$PGDATA"; fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp`},
							Env:          []corev1.EnvVar{{Name: "PGDATA", Value: pgdata}},
							Ports:        []corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432}},
							VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
									Command: []string{testbed.PostgresImageBin + "/pg_isready", "-h", "/tmp", "-p", "5432"},
								}},
								PeriodSeconds: 1, TimeoutSeconds: 5,
							},
						},
						{
							Name:            "amber",
							Image:           testbed.AmberImageRef,
							ImagePullPolicy: corev1.PullNever,
							Command:         []string{"/bin/sh", "-c", "amber --help > /tmp/amber-help.txt 2>&1 && exec sleep 2147483647"},
							VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
							// Ready once amber ran and the data directory PostgreSQL
							// made in the shared volume is visible here.
							ReadinessProbe: &corev1.Probe{
								ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
									Command: []string{"/bin/sh", "-c", "grep -qi usage /tmp/amber-help.txt && test -s " + pgdata + "/PG_VERSION"},
								}},
								PeriodSeconds: 1, TimeoutSeconds: 5,
							},
						},
					},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: &storageClass,
					Resources: corev1.VolumeResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("256Mi")},
					},
				},
			}},
		},
	}
}

func ptrTo[T any](v T) *T { return &v }

func dirExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
