package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/controller/sidecarapi/sidecardouble"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// TestSnapshotMode runs a snapshot-mode Backup against the real
// VolumeSnapshot machinery, without a kubelet: external-snapshotter's CRDs,
// snapshot-controller and csi-snapshotter, and the test CSI driver
// amber-csi-hostpath (conformance/tools/csi), on the envtest API server. The
// claim is bound by hand to a CSI volume of that driver (a directory); the
// sidecar is the test double. The controller freezes, creates the
// VolumeSnapshot, which snapshot-controller and csi-snapshotter cut (the
// driver copies the directory), thaws, waits for readyToUse and records the
// snapshot in the repository with the driver's handle.
func TestSnapshotMode(t *testing.T) {
	needEnv(t)
	bin := filepath.Join(testbed.DepsDir(), "bin")
	for _, n := range []string{"amber-csi-hostpath", "csi-snapshotter", "snapshot-controller", "snapshot-crds"} {
		if _, err := os.Stat(filepath.Join(bin, n)); err != nil {
			testbed.Skip(t, "volume snapshots: %s missing in %s (conformance/tools/csi/build.sh)", n, bin)
		}
	}
	ctx := context.Background()
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(bin, "snapshot-crds")}}); err != nil {
		t.Fatalf("install the VolumeSnapshot CRDs: %v", err)
	}
	const driver = testbed.CSIDriverName
	ns := namespace(t)

	// The driver and external-snapshotter's two processes.
	dir, err := os.MkdirTemp("", "csi")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	vols, snaps, sock := filepath.Join(dir, "v"), filepath.Join(dir, "s"), filepath.Join(dir, "csi.sock")
	handle := "pvc-" + ns
	must(t, os.MkdirAll(filepath.Join(vols, handle, "pgdata"), 0o755))
	must(t, os.WriteFile(filepath.Join(vols, handle, "pgdata", "PG_VERSION"), []byte("15\n"), 0o600))
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(t, clientcmd.WriteToFile(*kc, kubeconfig))
	var logs []string
	start := func(name string, args ...string) {
		log := filepath.Join(dir, name+".log")
		f, err := os.Create(log)
		must(t, err)
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Stdout, cmd.Stderr = f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		must(t, cmd.Start())
		f.Close()
		logs = append(logs, log)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	start("amber-csi-hostpath", "--endpoint="+sock, "--volumes-dir="+vols, "--snapshots-dir="+snaps, "--node-id=node")
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	common := []string{"--kubeconfig=" + kubeconfig, "--leader-election=false", "--v=2", "--feature-gates=CSIVolumeGroupSnapshot=false"}
	start("csi-snapshotter", append(common, "--csi-address="+sock)...)
	start("snapshot-controller", common...)
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("%s ends:\n%s", filepath.Base(l), b)
			}
		}
	})

	class := &unstructured.Unstructured{Object: map[string]any{"driver": driver, "deletionPolicy": "Delete"}}
	class.SetGroupVersionKind(controllers.GVKVolumeSnapshot.GroupVersion().WithKind("VolumeSnapshotClass"))
	class.SetName("hostpath-" + ns)
	must(t, k8s.Create(ctx, class))

	// The claim data-pg-0 bound to a CSI volume of the driver.
	pvName := "pv-" + ns
	must(t, k8s.Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName}, Spec: corev1.PersistentVolumeSpec{
		Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}},
		ClaimRef:               &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: "data-pg-0"}}}))
	empty := ""
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-pg-0"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: pvName, StorageClassName: &empty,
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	must(t, k8s.Create(ctx, pvc))
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	must(t, k8s.Status().Update(ctx, pvc))
	var pv corev1.PersistentVolume
	must(t, k8s.Get(ctx, types.NamespacedName{Name: pvName}, &pv))
	pv.Status.Phase = corev1.VolumeBound
	must(t, k8s.Status().Update(ctx, &pv))

	url := initRepo(t, ns)
	must(t, k8s.Create(ctx, policy(ns, "snap", func(p *amberv1.BackupPolicy) {
		p.Spec.Repository.URL = url
		p.Spec.Mode = amberv1.ModeSnapshot
		p.Spec.Snapshot = &amberv1.SnapshotSpec{VolumeSnapshotClassName: class.GetName(), Lease: &metav1.Duration{Duration: 10 * time.Second},
			Timeout: &metav1.Duration{Duration: 45 * time.Second}}
	})))
	statefulSet(t, ns, "pg", "snap", 1)
	sidecars.Set(ns+"/pg-0", sidecardouble.Pod{
		Probe: sidecarapi.ProbeResult{Healthy: true, Role: sidecarapi.RolePrimary, SystemID: "7301", ServerVersion: "PostgreSQL 15"},
		Thawed: sidecarapi.Thawed{Consistent: sidecarapi.Position{Epoch: 1, Offset: 0x3000100, Text: "1/0/3000100"}, ConsistentTime: time.Now(),
			Files: []sidecarapi.File{{Name: "backup_label", Content: []byte("START WAL LOCATION: 0/3000028"), Mode: 0o600}}}})

	b := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "snap1"}, Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "snap"}}}
	must(t, k8s.Create(ctx, b))
	deadline := time.Now().Add(90 * time.Second)
	for {
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(b), b))
		if b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Backup snap1 still %s after 90 s: %+v", b.Status.Phase, b.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b.Status.Phase != amberv1.PhaseSucceeded {
		t.Fatalf("Backup snap1 %s: %s", b.Status.Phase, b.Status.Error)
	}
	if c := meta.FindStatusCondition(b.Status.Conditions, controllers.CondThawed); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Thawed condition %+v", c)
	}
	if sidecars.Frozen(ns + "/pg-0") {
		t.Error("still frozen after the backup")
	}
	if len(b.Status.Snapshots) != 1 || !b.Status.Snapshots[0].ReadyToUse || b.Status.Snapshots[0].VolumeSnapshotContent == "" {
		t.Fatalf("status snapshots %+v", b.Status.Snapshots)
	}

	// What snapshot-controller and the driver made of it.
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: b.Status.Snapshots[0].VolumeSnapshot}, vs))
	if ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse"); !ready {
		t.Fatalf("VolumeSnapshot status %v", vs.Object["status"])
	}
	if l := vs.GetLabels(); l[controllers.LabelBackup] != "snap1" || l[controllers.LabelPolicy] != "snap" {
		t.Errorf("VolumeSnapshot labels %v", l)
	}
	be, err := file.Open(strings.TrimPrefix(url, "file://"), false)
	must(t, err)
	r, err := repo.Open(ctx, be, []byte("s3cret-pw"), repo.Options{CacheDir: "-"})
	must(t, err)
	defer r.Close()
	all, err := r.Backups(ctx)
	must(t, err)
	if len(all) != 1 || all[0].ID.String() != b.Status.BackupID || all[0].Mode != repo.ModeSnapshot || len(all[0].Snapshots) != 1 {
		t.Fatalf("repository backups %+v", all)
	}
	s := all[0].Snapshots[0]
	if s.Driver != driver || s.Content != b.Status.Snapshots[0].VolumeSnapshotContent || s.Claim != "data-pg-0" || s.Class != class.GetName() ||
		s.CreationTime.IsZero() || s.RestoreSize != 3 || !strings.HasPrefix(s.Handle, "snap-") {
		t.Fatalf("recorded snapshot %+v", s)
	}
	if got, err := os.ReadFile(filepath.Join(snaps, s.Handle, "pgdata", "PG_VERSION")); err != nil || string(got) != "15\n" {
		t.Fatalf("the driver's copy for handle %s: %q, %v", s.Handle, got, err)
	}
	if rec := all[0].Record; rec == nil || rec.SystemID != "7301" || rec.Consistent.Text != "1/0/3000100" || len(rec.Files) != 1 {
		t.Fatalf("engine record %+v", rec)
	}
	t.Logf("snapshot backup %s: VolumeSnapshot %s, content %s, handle %s, %s",
		all[0].ID.Short(), s.Name, s.Content, s.Handle, fmt.Sprint(b.Status.FinishedAt.Sub(b.Status.StartedAt.Time)))
}
