package testbed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// provisionerName is the provisioner of the cluster's StorageClass.
const provisionerName = "testbed.amber.dev/local"

// startProvisioner creates the default StorageClass and runs a provisioner
// for it in this process: each claim gets a hostPath volume, a directory
// under Dir/volumes that every user may write (hostPath volumes get no
// fsGroup), deleted with its claim. After StartSnapshots it also binds
// claims of CSIStorageClass, to CSI volumes (provisionCSI). Unlike kube-controller-manager's
// hostpath provisioner it keeps volumes under Dir, not in /tmp.
func (c *Cluster) startProvisioner(ctx context.Context) error {
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.StorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       provisionerName,
		ReclaimPolicy:     ptr(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate),
	}
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create storage class %s: %w", c.StorageClass, err)
	}
	logFile, err := os.OpenFile(filepath.Join(c.LogDir, "provisioner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(logFile, nil))
	pctx, cancel := context.WithCancel(context.Background())
	c.stopProv = cancel
	c.provDone = make(chan struct{})
	go func() {
		defer close(c.provDone)
		defer logFile.Close()
		for {
			// Each round has a deadline: a request that hangs (a stuck
			// connection to the API server) must not stop provisioning
			// for the rest of the test run.
			rctx, rcancel := context.WithTimeout(pctx, 2*time.Minute)
			c.provisionOnce(rctx, log)
			if errors.Is(rctx.Err(), context.DeadlineExceeded) {
				log.Warn("a provisioning round timed out; starting another")
			}
			rcancel()
			select {
			case <-pctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return nil
}

func (c *Cluster) volumeDir(name string) string { return filepath.Join(c.Dir, "volumes", name) }

// provisionOnce binds pending claims of the class and deletes released volumes.
func (c *Cluster) provisionOnce(ctx context.Context, log *slog.Logger) {
	pvcs, err := c.Client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("list claims", "err", err)
		}
		return
	}
	for i := range pvcs.Items {
		pvc := &pvcs.Items[i]
		class := ""
		if pvc.Spec.StorageClassName != nil {
			class = *pvc.Spec.StorageClassName
		}
		csi := class == CSIStorageClass && c.csiEnabled.Load()
		if (class != c.StorageClass && !csi) || pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.DeletionTimestamp != nil {
			continue
		}
		name := "pvc-" + string(pvc.UID)
		dir := c.volumeDir(name)
		source := corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr(corev1.HostPathDirectory)}}
		if csi {
			var ok bool
			if source, ok = c.provisionCSI(ctx, log, pvc, name, dir); !ok {
				continue
			}
		} else {
			if err := os.MkdirAll(dir, 0o777); err != nil {
				log.Error("create volume directory", "dir", dir, "err", err)
				continue
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				log.Error("open volume directory to all users", "dir", dir, "err", err)
				continue
			}
		}
		size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		if size.IsZero() {
			size = resource.MustParse("1Gi")
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName},
			},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
				AccessModes:                   pvc.Spec.AccessModes,
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				StorageClassName:              class,
				VolumeMode:                    pvc.Spec.VolumeMode,
				ClaimRef: &corev1.ObjectReference{
					Kind: "PersistentVolumeClaim", APIVersion: "v1",
					Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
				},
				PersistentVolumeSource: source,
			},
		}
		if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && ctx.Err() == nil {
			if ignoreAlreadyExists(err) != nil {
				log.Error("create volume", "pv", name, "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
			}
			continue
		}
		log.Info("provisioned", "pv", name, "claim", pvc.Namespace+"/"+pvc.Name, "dir", dir)
	}

	pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, pv := range pvs.Items {
		if pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisionerName || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		if err := os.RemoveAll(c.volumeDir(pv.Name)); err != nil {
			log.Error("remove volume directory", "pv", pv.Name, "err", err)
			continue
		}
		if err := c.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); ignoreNotFound(err) != nil && ctx.Err() == nil {
			log.Error("delete volume", "pv", pv.Name, "err", err)
			continue
		}
		log.Info("deleted", "pv", pv.Name)
	}
}
