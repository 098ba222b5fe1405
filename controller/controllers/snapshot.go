package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/sidecar/repo"
)

// The VolumeSnapshot API (external-snapshotter's CRDs), used unstructured
// so the controller needs neither its client module nor the CRDs to start.
var (
	GVKVolumeSnapshot        = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}
	GVKVolumeSnapshotContent = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotContent"}
)

// LabelBackup marks the VolumeSnapshots a Backup took.
const LabelBackup = "amber.dev/backup"

// CondThawed: the database was thawed after the snapshots were cut, within
// its lease (snapshot mode).
const CondThawed = "Thawed"

// Defaults of spec.snapshot.
const (
	DefaultSnapshotLease   = time.Minute
	DefaultSnapshotTimeout = 10 * time.Minute
)

// SnapshotRecorder writes the manifest of a snapshot backup into a
// policy's repository and returns its id.
type SnapshotRecorder interface {
	RecordSnapshot(ctx context.Context, p *amberv1.BackupPolicy, m *repo.Manifest) (string, error)
}

// snapshotRun is one snapshot-mode backup of one pod.
type snapshotRun struct {
	r    *BackupReconciler
	b    *amberv1.Backup
	p    *amberv1.BackupPolicy
	sts  string
	pick *Candidate
	log  *slog.Logger

	lease, timeout, poll time.Duration
	// taken are the VolumeSnapshots created so far.
	taken []amberv1.BackupSnapshot
}

// claimVolumes returns the pod's volumes backed by a PersistentVolumeClaim,
// in the pod's order: their names and their claims' names.
func claimVolumes(pod *corev1.Pod) (vols, claims []string) {
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			vols = append(vols, v.Name)
			claims = append(claims, v.PersistentVolumeClaim.ClaimName)
		}
	}
	return vols, claims
}

// snapshotName is the VolumeSnapshot's name for a Backup's volume: a DNS
// subdomain of at most 253 characters.
func snapshotName(backup, volume string) string {
	n := strings.ToLower(backup + "-" + volume)
	if len(n) > 253 {
		n = strings.TrimRight(n[:253], "-.")
	}
	return n
}

func (r *BackupReconciler) reader() client.Reader {
	if r.Reader != nil {
		return r.Reader
	}
	return r.Client
}

// run takes a snapshot-mode backup: Freeze through the sidecar
// under a lease (renewed while it waits), one VolumeSnapshot per claim of
// the pod, Thaw as soon as every snapshot is cut (and, whatever happened,
// before returning), then wait for every snapshot to be readyToUse and
// record the backup in the repository. On failure the VolumeSnapshots it
// created are deleted: a snapshot without its thaw's record is not
// restorable to a consistent state.
func (s *snapshotRun) run(ctx context.Context) (res sidecarapi.BackupResult, err error) {
	r, b, p, pod := s.r, s.b, s.p, s.pick.Pod
	vols, claims := claimVolumes(pod)
	if len(claims) == 0 {
		return res, fmt.Errorf("pod %s has no PersistentVolumeClaim volume to snapshot; snapshot mode needs the database on CSI volumes", pod.Name)
	}
	if r.Snapshots == nil {
		return res, errors.New("this controller cannot record snapshot backups (no repository writer)")
	}
	// The lease and the timeout are real time, as the sidecar's lease and
	// the storage system are.
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	sc, err := r.Dialer.Dial(ctx, pod)
	if err != nil {
		return res, err
	}
	defer sc.Close()

	started := r.now()
	frozen, err := sc.Freeze(ctx, sidecarapi.FreezeRequest{Lease: s.lease, Label: "amber " + b.Namespace + "/" + b.Name})
	if err != nil {
		return res, fmt.Errorf("freeze the database on pod %s: %w", pod.Name, err)
	}
	r.Recorder.Eventf(b, corev1.EventTypeNormal, "Frozen", "database on pod %s frozen at %s under a %s lease", pod.Name, frozen.Position.Text, s.lease)
	s.log.Info("frozen", "pod", pod.Name, "position", frozen.Position.Text, "lease", s.lease)

	// Renew the lease while frozen; stop renewing before the thaw.
	renewCtx, stopRenew := context.WithCancel(ctx)
	var renewWG sync.WaitGroup
	var renewErr error
	renewWG.Add(1)
	go func() {
		defer renewWG.Done()
		t := time.NewTicker(s.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				if _, err := sc.RenewLease(renewCtx, frozen.LeaseID, s.lease); err != nil && renewCtx.Err() == nil {
					renewErr = err
					s.log.Warn("renew freeze lease", "pod", pod.Name, "error", err)
					if errors.Is(err, sidecarapi.ErrLeaseExpired) {
						return
					}
				}
			}
		}
	}()
	thawed := false
	var th sidecarapi.Thawed
	thaw := func() error {
		stopRenew()
		renewWG.Wait()
		thawed = true
		// Thaw even when ctx has ended (timeout): a bounded call of its own.
		tctx, tcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer tcancel()
		var err error
		th, err = sc.Thaw(tctx, frozen.LeaseID)
		return err
	}
	defer func() {
		if !thawed {
			if terr := thaw(); terr != nil {
				s.log.Warn("thaw after a failed snapshot", "pod", pod.Name, "error", terr)
			}
		}
		if err != nil {
			s.deleteTaken(context.WithoutCancel(ctx))
		}
	}()

	for i, claim := range claims {
		name := snapshotName(b.Name, vols[i])
		vs := &unstructured.Unstructured{}
		vs.SetGroupVersionKind(GVKVolumeSnapshot)
		vs.SetNamespace(b.Namespace)
		vs.SetName(name)
		vs.SetLabels(map[string]string{LabelBackup: b.Name, LabelPolicy: p.Name, LabelStatefulSet: s.sts})
		spec := map[string]any{"source": map[string]any{"persistentVolumeClaimName": claim}}
		if cls := snapshotClass(p); cls != "" {
			spec["volumeSnapshotClassName"] = cls
		}
		vs.Object["spec"] = spec
		if err := r.Client.Create(ctx, vs); err != nil && !apierrors.IsAlreadyExists(err) {
			if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				return res, errors.New("the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed: install external-snapshotter's CRDs and snapshot-controller")
			}
			return res, fmt.Errorf("create VolumeSnapshot %s of claim %s: %w", name, claim, err)
		}
		s.taken = append(s.taken, amberv1.BackupSnapshot{PersistentVolumeClaim: claim, VolumeSnapshot: name})
	}
	s.recordTaken(ctx)
	r.Recorder.Eventf(b, corev1.EventTypeNormal, "SnapshotsCreated", "VolumeSnapshots %s of pod %s created", strings.Join(s.names(), ", "), pod.Name)

	// Frozen until every snapshot is cut.
	if _, err := s.waitSnapshots(ctx, false); err != nil {
		return res, err
	}
	if err := thaw(); err != nil {
		reason := "ThawFailed"
		if errors.Is(err, sidecarapi.ErrLeaseExpired) {
			reason = "LeaseExpired"
		}
		setCondition(r.Recorder, b, &b.Status.Conditions, metav1.Condition{Type: CondThawed, Status: metav1.ConditionFalse, Reason: reason,
			Message: fmt.Sprintf("pod %s: %v; the snapshots are discarded", pod.Name, err)}, r.Clock)
		return res, fmt.Errorf("thaw the database on pod %s: %w (the snapshots are not consistent and were deleted; take a new Backup, with a longer spec.snapshot.lease if it ran out)", pod.Name, err)
	}
	if renewErr != nil {
		s.log.Info("a lease renewal failed, but the thaw succeeded within the lease", "error", renewErr)
	}
	setCondition(r.Recorder, b, &b.Status.Conditions, metav1.Condition{Type: CondThawed, Status: metav1.ConditionTrue, Reason: "Thawed",
		Message: fmt.Sprintf("pod %s thawed after the snapshots were cut; consistent at %s", pod.Name, th.Consistent.Text)}, r.Clock)
	s.log.Info("thawed", "pod", pod.Name, "consistent", th.Consistent.Text)

	snaps, err := s.waitSnapshots(ctx, true)
	if err != nil {
		return res, err
	}
	b.Status.Snapshots = append([]amberv1.BackupSnapshot(nil), s.taken...)
	m := &repo.Manifest{
		Name: b.Namespace + "/" + s.sts, Host: pod.Name, Engine: string(p.Spec.Engine), Mode: repo.ModeSnapshot,
		Tags:    map[string]string{"namespace": b.Namespace, "statefulset": s.sts, "pod": pod.Name, "policy": p.Name, "backup": b.Name},
		Start:   started.UTC(),
		Entries: []repo.Entry{}, Position: th.Consistent.Text, ConsistentTime: th.ConsistentTime.UTC(),
		Record: &repo.EngineRecord{
			SystemID: s.pick.Probe.SystemID, ServerVersion: s.pick.Probe.ServerVersion,
			Start:      repo.LogPosition{Epoch: frozen.Position.Epoch, Offset: frozen.Position.Offset, Text: frozen.Position.Text},
			Consistent: repo.LogPosition{Epoch: th.Consistent.Epoch, Offset: th.Consistent.Offset, Text: th.Consistent.Text},
			StartTime:  frozen.ConsistentTime.UTC(), ConsistentTime: th.ConsistentTime.UTC(), Metadata: th.Metadata,
		},
		Snapshots: snaps,
	}
	for i := range m.Snapshots {
		m.Snapshots[i].Volume = vols[i]
	}
	for _, f := range th.Files {
		m.Record.Files = append(m.Record.Files, repo.EngineFile{Name: f.Name, Content: f.Content, Mode: f.Mode})
	}
	id, err := r.Snapshots.RecordSnapshot(ctx, p, m)
	if err != nil {
		return res, fmt.Errorf("record the snapshot backup in the repository: %w", err)
	}
	return sidecarapi.BackupResult{ID: id}, nil
}

func snapshotClass(p *amberv1.BackupPolicy) string {
	if p.Spec.Snapshot != nil {
		return p.Spec.Snapshot.VolumeSnapshotClassName
	}
	return ""
}

func (s *snapshotRun) names() []string {
	var out []string
	for _, t := range s.taken {
		out = append(out, t.VolumeSnapshot)
	}
	return out
}

// recordTaken puts the VolumeSnapshots on the Backup's status, so a
// controller that restarts knows what to clean up.
func (s *snapshotRun) recordTaken(ctx context.Context) {
	orig := s.b.DeepCopy()
	s.b.Status.Snapshots = append([]amberv1.BackupSnapshot(nil), s.taken...)
	if err := s.r.Client.Status().Patch(ctx, s.b, client.MergeFrom(orig)); err != nil {
		s.log.Warn("record VolumeSnapshots on the Backup", "error", err)
	}
}

// waitSnapshots polls the VolumeSnapshots until each is cut (its status
// has a creationTime, or readyToUse), or with ready until each is
// readyToUse; it fails on a snapshot's status error and when ctx ends.
func (s *snapshotRun) waitSnapshots(ctx context.Context, ready bool) ([]repo.VolumeSnapshot, error) {
	what := "cut"
	if ready {
		what = "readyToUse"
	}
	t := time.NewTicker(s.poll)
	defer t.Stop()
	var last string
	for {
		out, pending, err := s.readSnapshots(ctx, ready)
		if err != nil {
			return nil, err
		}
		if pending == "" {
			return out, nil
		}
		last = pending
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("VolumeSnapshot %s not %s within %s (spec.snapshot.timeout); check that snapshot-controller and the CSI driver's csi-snapshotter run", last, what, s.timeout)
		case <-t.C:
		}
	}
}

// readSnapshots reads every VolumeSnapshot taken; pending names one not
// yet cut (or ready), "" when none.
func (s *snapshotRun) readSnapshots(ctx context.Context, ready bool) (out []repo.VolumeSnapshot, pending string, err error) {
	for i, t := range s.taken {
		vs := &unstructured.Unstructured{}
		vs.SetGroupVersionKind(GVKVolumeSnapshot)
		if err := s.r.reader().Get(ctx, types.NamespacedName{Namespace: s.b.Namespace, Name: t.VolumeSnapshot}, vs); err != nil {
			return nil, "", fmt.Errorf("read VolumeSnapshot %s: %w", t.VolumeSnapshot, err)
		}
		if msg, _, _ := unstructured.NestedString(vs.Object, "status", "error", "message"); msg != "" {
			return nil, "", fmt.Errorf("VolumeSnapshot %s failed: %s", t.VolumeSnapshot, msg)
		}
		isReady, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse")
		created, _, _ := unstructured.NestedString(vs.Object, "status", "creationTime")
		content, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName")
		s.taken[i].ReadyToUse = isReady
		s.taken[i].VolumeSnapshotContent = content
		if (ready && !isReady) || (!ready && !isReady && created == "") {
			if pending == "" {
				pending = t.VolumeSnapshot
			}
			continue
		}
		rec := repo.VolumeSnapshot{Claim: t.PersistentVolumeClaim, Namespace: s.b.Namespace, Name: t.VolumeSnapshot, Content: content}
		rec.Class, _, _ = unstructured.NestedString(vs.Object, "spec", "volumeSnapshotClassName")
		if created != "" {
			if ct, err := time.Parse(time.RFC3339, created); err == nil {
				rec.CreationTime = ct.UTC()
			}
		}
		if rs, _, _ := unstructured.NestedString(vs.Object, "status", "restoreSize"); rs != "" {
			if q, err := resource.ParseQuantity(rs); err == nil {
				rec.RestoreSize = q.Value()
			}
		}
		if ready && content != "" {
			vsc := &unstructured.Unstructured{}
			vsc.SetGroupVersionKind(GVKVolumeSnapshotContent)
			if err := s.r.reader().Get(ctx, types.NamespacedName{Name: content}, vsc); err != nil {
				return nil, "", fmt.Errorf("read VolumeSnapshotContent %s: %w", content, err)
			}
			rec.Driver, _, _ = unstructured.NestedString(vsc.Object, "spec", "driver")
			rec.Handle, _, _ = unstructured.NestedString(vsc.Object, "status", "snapshotHandle")
			if rec.Class == "" {
				rec.Class, _, _ = unstructured.NestedString(vsc.Object, "spec", "volumeSnapshotClassName")
			}
			if rec.RestoreSize == 0 {
				if n, ok, _ := unstructured.NestedInt64(vsc.Object, "status", "restoreSize"); ok {
					rec.RestoreSize = n
				}
			}
		}
		out = append(out, rec)
	}
	return out, pending, nil
}

// deleteTaken deletes the VolumeSnapshots of a snapshot backup that failed.
func (s *snapshotRun) deleteTaken(ctx context.Context) {
	for _, t := range s.taken {
		if err := deleteSnapshot(ctx, s.r.Client, s.b.Namespace, t.VolumeSnapshot); err != nil {
			s.log.Warn("delete the VolumeSnapshot of a failed snapshot backup; delete it by hand", "volumesnapshot", t.VolumeSnapshot, "error", err)
		}
	}
	if len(s.taken) > 0 {
		s.r.Recorder.Eventf(s.b, corev1.EventTypeNormal, "SnapshotsDeleted", "VolumeSnapshots %s deleted: the backup failed", strings.Join(s.names(), ", "))
	}
}

func deleteSnapshot(ctx context.Context, c client.Client, ns, name string) error {
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(GVKVolumeSnapshot)
	vs.SetNamespace(ns)
	vs.SetName(name)
	if err := c.Delete(ctx, vs); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// cleanupInterrupted deletes the VolumeSnapshots of a snapshot backup that
// a controller restart interrupted: whether its thaw came in time is
// unknown, and nothing recorded them in the repository.
func (r *BackupReconciler) cleanupInterrupted(ctx context.Context, b *amberv1.Backup) []string {
	var gone []string
	for _, t := range b.Status.Snapshots {
		if err := deleteSnapshot(ctx, r.Client, b.Namespace, t.VolumeSnapshot); err != nil {
			r.log().Warn("delete the VolumeSnapshot of an interrupted backup; delete it by hand", "namespace", b.Namespace, "volumesnapshot", t.VolumeSnapshot, "error", err)
			continue
		}
		gone = append(gone, t.VolumeSnapshot)
	}
	sort.Strings(gone)
	return gone
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d != nil && d.Duration > 0 {
		return d.Duration
	}
	return def
}
