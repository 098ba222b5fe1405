package testbed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// The cluster's CSI volumes with snapshots (StartSnapshots).
const (
	// CSIDriverName is amber-csi-hostpath's driver name.
	CSIDriverName = "hostpath.csi.amber.dev"
	// CSIStorageClass is the StorageClass whose claims get CSI volumes of
	// that driver; CSISnapshotClass the VolumeSnapshotClass of its
	// snapshots.
	CSIStorageClass  = "amber-csi-hostpath"
	CSISnapshotClass = "amber-csi-hostpath"
)

// csiBinaries are what StartSnapshots runs, from .deps/bin
// (conformance/tools/csi/build.sh).
var csiBinaries = []string{"amber-csi-hostpath", "csi-snapshotter", "snapshot-controller"}

var (
	gvrVolumeSnapshot        = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}
	gvrVolumeSnapshotContent = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotcontents"}
)

func (c *Cluster) csiDir(parts ...string) string {
	return filepath.Join(append([]string{c.Dir, "csi"}, parts...)...)
}

// StartSnapshots gives the cluster CSI volumes with snapshots, as a cluster
// with a snapshot-capable CSI driver has them: external-snapshotter's
// VolumeSnapshot CRDs, its snapshot-controller and csi-snapshotter (host
// processes with the administrator's kubeconfig), and amber-csi-hostpath,
// a CSI driver for tests that registers with the kubelet itself and runs
// in the node's mount namespace. Claims of CSIStorageClass are bound by the
// cluster's provisioner to CSI volumes of that driver (directories under
// Dir/volumes, as for the default class); a claim whose dataSource is a
// VolumeSnapshot gets a copy of the snapshot, as external-provisioner would
// ask a driver for. It returns a *MissingError when a binary is missing.
func (c *Cluster) StartSnapshots(ctx context.Context) error {
	bins := map[string]string{}
	var missing []string
	for _, name := range csiBinaries {
		p := filepath.Join(DepsDir(), "bin", name)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			missing = append(missing, name)
			continue
		}
		bins[name] = p
	}
	crds, _ := filepath.Glob(filepath.Join(DepsDir(), "bin", "snapshot-crds", "*.yaml"))
	if len(crds) == 0 {
		missing = append(missing, "snapshot-crds/*.yaml")
	}
	if len(missing) > 0 {
		return &MissingError{Reason: fmt.Sprintf("missing %s in %s/bin (conformance/tools/csi/build.sh)", strings.Join(missing, ", "), DepsDir())}
	}
	return c.phase("CSI driver and volume snapshots", func() error {
		if err := c.ApplyFiles(ctx, crds...); err != nil {
			return fmt.Errorf("VolumeSnapshot CRDs: %w", err)
		}
		drv := &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: CSIDriverName}, Spec: storagev1.CSIDriverSpec{
			AttachRequired: ptr(false), PodInfoOnMount: ptr(false), FSGroupPolicy: ptr(storagev1.NoneFSGroupPolicy),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}}}
		if _, err := c.Client.StorageV1().CSIDrivers().Create(ctx, drv, metav1.CreateOptions{}); ignoreAlreadyExists(err) != nil {
			return fmt.Errorf("CSIDriver: %w", err)
		}
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: CSIStorageClass}, Provisioner: CSIDriverName,
			ReclaimPolicy: ptr(corev1.PersistentVolumeReclaimDelete), VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate)}
		if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); ignoreAlreadyExists(err) != nil {
			return fmt.Errorf("StorageClass %s: %w", CSIStorageClass, err)
		}
		if err := c.Apply(ctx, []byte(fmt.Sprintf(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: %s}
driver: %s
deletionPolicy: Delete
`, CSISnapshotClass, CSIDriverName))); err != nil {
			return fmt.Errorf("VolumeSnapshotClass: %w", err)
		}
		for _, d := range []string{c.csiDir(), c.csiDir("snapshots"), filepath.Join(c.Dir, "volumes")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		sock := c.csiDir("csi.sock")
		drvProc, err := startClusterProc("csi-hostpath", c.LogDir, c.node.inNamespace(bins["amber-csi-hostpath"],
			"--endpoint="+sock, "--registration-dir="+c.node.path("kubelet", "plugins_registry"),
			"--volumes-dir="+filepath.Join(c.Dir, "volumes"), "--snapshots-dir="+c.csiDir("snapshots"), "--node-id="+c.NodeName))
		if err != nil {
			return err
		}
		c.csiProcs = append(c.csiProcs, drvProc)
		if err := waitFor(ctx, 20*time.Second, drvProc, func() error { _, err := os.Stat(sock); return err }); err != nil {
			return fmt.Errorf("amber-csi-hostpath not serving: %w", err)
		}
		for _, name := range []string{"csi-snapshotter", "snapshot-controller"} {
			// No VolumeGroupSnapshots: their CRDs are not installed, and
			// both would wait for them at startup.
			args := []string{bins[name], "--kubeconfig=" + c.Kubeconfig, "--leader-election=false", "--v=2",
				"--feature-gates=CSIVolumeGroupSnapshot=false"}
			if name == "csi-snapshotter" {
				args = append(args, "--csi-address="+sock)
			}
			p, err := startClusterProc(name, c.LogDir, args)
			if err != nil {
				return err
			}
			c.csiProcs = append(c.csiProcs, p)
		}
		c.csiEnabled.Store(true)
		// The kubelet has registered the driver when its CSINode lists it.
		return waitFor(ctx, 60*time.Second, drvProc, func() error {
			n, err := c.Client.StorageV1().CSINodes().Get(ctx, c.NodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, d := range n.Spec.Drivers {
				if d.Name == CSIDriverName {
					return nil
				}
			}
			return fmt.Errorf("the kubelet has not registered %s yet", CSIDriverName)
		})
	})
}

// StartClusterSnapshots is StartSnapshots for a test: it skips t (or fails
// it under AMBER_TEST_REQUIRE_ALL=1) when a binary is missing.
func StartClusterSnapshots(t testing.TB, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := c.StartSnapshots(ctx)
	var missing *MissingError
	if errors.As(err, &missing) {
		Skip(t, "volume snapshots: %s", missing.Reason)
	}
	if err != nil {
		t.Fatalf("volume snapshots on the test cluster: %v%s", err, c.csiLogs())
	}
}

func (c *Cluster) csiLogs() string {
	var b strings.Builder
	for _, p := range c.csiProcs {
		fmt.Fprintf(&b, "\n%s log ends:\n%s", p.name, p.logTail(2000))
	}
	return b.String()
}

// CSILogs returns the ends of the CSI processes' logs, for a failing test.
func (c *Cluster) CSILogs() string { return c.csiLogs() }

// stopCSI stops the CSI processes, before the node goes.
func (c *Cluster) stopCSI() {
	for i := len(c.csiProcs) - 1; i >= 0; i-- {
		if p := c.csiProcs[i]; !p.exited() {
			_ = syscall.Kill(p.pid(), syscall.SIGCONT) // a paused one
		}
		c.csiProcs[i].stop(5 * time.Second)
	}
}

// provisionCSI makes the CSI volume of a pending claim of CSIStorageClass:
// a directory named like the volume, empty or a copy of the VolumeSnapshot
// its dataSource names (once that is ready). It returns the volume's
// source, or ok false to retry later.
func (c *Cluster) provisionCSI(ctx context.Context, log *slog.Logger, pvc *corev1.PersistentVolumeClaim, name, dir string) (corev1.PersistentVolumeSource, bool) {
	ds := pvc.Spec.DataSourceRef
	if ds == nil && pvc.Spec.DataSource != nil {
		ds = &corev1.TypedObjectReference{APIGroup: pvc.Spec.DataSource.APIGroup, Kind: pvc.Spec.DataSource.Kind, Name: pvc.Spec.DataSource.Name}
	}
	if ds != nil {
		if ds.Kind != "VolumeSnapshot" {
			log.Warn("unsupported dataSource", "claim", pvc.Namespace+"/"+pvc.Name, "kind", ds.Kind)
			return corev1.PersistentVolumeSource{}, false
		}
		handle, err := c.snapshotHandle(ctx, pvc.Namespace, ds.Name)
		if err != nil {
			log.Info("waiting for the VolumeSnapshot of a claim", "claim", pvc.Namespace+"/"+pvc.Name, "snapshot", ds.Name, "why", err)
			return corev1.PersistentVolumeSource{}, false
		}
		tmp := dir + ".tmp"
		_ = os.RemoveAll(tmp)
		if out, err := exec.CommandContext(ctx, "cp", "-a", c.csiDir("snapshots", handle), tmp).CombinedOutput(); err != nil {
			log.Error("copy snapshot into a new volume", "snapshot", handle, "err", err, "out", string(out))
			_ = os.RemoveAll(tmp)
			return corev1.PersistentVolumeSource{}, false
		}
		if err := os.Rename(tmp, dir); err != nil {
			log.Error("copy snapshot into a new volume", "snapshot", handle, "err", err)
			return corev1.PersistentVolumeSource{}, false
		}
		log.Info("volume restored from snapshot", "claim", pvc.Namespace+"/"+pvc.Name, "snapshot", ds.Name, "handle", handle)
	} else if err := os.MkdirAll(dir, 0o777); err != nil {
		log.Error("create volume directory", "dir", dir, "err", err)
		return corev1.PersistentVolumeSource{}, false
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		log.Error("open volume directory to all users", "dir", dir, "err", err)
		return corev1.PersistentVolumeSource{}, false
	}
	return corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: CSIDriverName, VolumeHandle: name}}, true
}

// snapshotHandle returns the driver's id of a ready VolumeSnapshot.
func (c *Cluster) snapshotHandle(ctx context.Context, ns, name string) (string, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return "", err
	}
	vs, err := dyn.Resource(gvrVolumeSnapshot).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	status, _ := vs.Object["status"].(map[string]any)
	if ready, _ := status["readyToUse"].(bool); !ready {
		return "", errors.New("not readyToUse yet")
	}
	content, _ := status["boundVolumeSnapshotContentName"].(string)
	vsc, err := dyn.Resource(gvrVolumeSnapshotContent).Get(ctx, content, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	cst, _ := vsc.Object["status"].(map[string]any)
	handle, _ := cst["snapshotHandle"].(string)
	if handle == "" || handle != filepath.Base(handle) {
		return "", fmt.Errorf("VolumeSnapshotContent %s has no usable snapshotHandle", content)
	}
	return handle, nil
}

// PauseSnapshotter stops csi-snapshotter (SIGSTOP) until resume is
// called: VolumeSnapshots are then never cut, as with a storage system that
// hangs. Tests use it to hold a snapshot backup between freeze and thaw.
func (c *Cluster) PauseSnapshotter() (resume func(), err error) {
	for _, p := range c.csiProcs {
		if p.name != "csi-snapshotter" {
			continue
		}
		pid := p.pid()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return nil, err
		}
		return func() { _ = syscall.Kill(pid, syscall.SIGCONT) }, nil
	}
	return nil, errors.New("csi-snapshotter does not run: call StartSnapshots first")
}
