package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Pruner applies a policy's retention to its repository.
type Pruner interface {
	// Prune forgets the backups the policy's retention does not keep and
	// returns a one-line summary and the manifests of the snapshot backups
	// it forgot (their VolumeSnapshots are the caller's to delete).
	Prune(ctx context.Context, p *amberv1.BackupPolicy) (string, []*repo.Manifest, error)
}

// BackupReconciler runs Backups.
type BackupReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Clock    clock.Clock
	Dialer   sidecarapi.Dialer
	// Pruner runs retention after each successful backup; nil: none.
	Pruner Pruner
	// Workloads stores the StatefulSet and the objects it uses with each
	// successful backup; nil: none.
	Workloads WorkloadStore
	// Snapshots records snapshot-mode backups in the repository; nil:
	// snapshot mode fails.
	Snapshots SnapshotRecorder
	// Reader reads VolumeSnapshots uncached (nil: Client), so the
	// controller never watches an API that may not be installed.
	Reader client.Reader
	// SnapshotPoll is how often VolumeSnapshots are looked at; default 1 s.
	SnapshotPoll time.Duration
	Logger       *slog.Logger
	// MaxConcurrent backups at once (each holds a worker while it runs).
	MaxConcurrent int
	// ReplicaWait is how long a Backup stays Pending while no replica
	// qualifies before it fails; 0: two minutes, negative: fail at once.
	ReplicaWait time.Duration

	// mine holds the UIDs of the Backups this process has run, with when
	// it finished them: for a while after that the cache may still show
	// one Running, which is not an interrupted backup.
	mine sync.Map
}

func (r *BackupReconciler) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	n := r.MaxConcurrent
	if n <= 0 {
		n = 4
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&amberv1.Backup{}).
		Named("backup").
		WithOptions(controller.Options{MaxConcurrentReconciles: n}).
		Complete(r)
}

func (r *BackupReconciler) now() metav1.Time { return metav1.Time{Time: clock.Or(r.Clock).Now()} }

func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var b amberv1.Backup
	if err := r.Client.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch b.Status.Phase {
	case amberv1.PhaseSucceeded, amberv1.PhaseFailed:
		return ctrl.Result{}, nil
	case amberv1.PhaseRunning:
		// A backup runs inside one reconcile and the same Backup is never
		// reconciled twice at once. Running here is either this process's
		// own update not yet in the cache (look again shortly) or a backup
		// whose process is gone.
		if v, ok := r.mine.Load(b.UID); ok && clock.Or(r.Clock).Now().Sub(v.(time.Time)) < time.Minute {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		msg := fmt.Sprintf("the controller stopped while pod %s was backing up; the result is unknown (list the repository with `amber ls`) — create a new Backup", b.Status.TargetPod)
		if len(b.Status.Snapshots) > 0 {
			// A freeze it held has thawed by itself when its lease ran
			// out; its snapshots were never recorded.
			msg = fmt.Sprintf("the controller stopped while pod %s was frozen for snapshots (its freeze lease thaws it by itself); VolumeSnapshots deleted: %v — create a new Backup", b.Status.TargetPod, r.cleanupInterrupted(ctx, &b))
		}
		return ctrl.Result{}, r.fail(ctx, &b, "Interrupted", msg)
	}
	log := r.log().With("namespace", b.Namespace, "backup", b.Name)

	var p amberv1.BackupPolicy
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.PolicyRef.Name}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.fail(ctx, &b, "PolicyNotFound", fmt.Sprintf("BackupPolicy %q does not exist in namespace %s", b.Spec.PolicyRef.Name, b.Namespace))
		}
		return ctrl.Result{}, err
	}
	groups, err := policyPods(ctx, r.Client, b.Namespace, p.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	sts := b.Spec.StatefulSet
	if sts == "" {
		switch len(groups) {
		case 0:
			return ctrl.Result{}, r.fail(ctx, &b, "NoStatefulSet", fmt.Sprintf("no StatefulSet's pods carry amber.dev/policy=%s in namespace %s", p.Name, b.Namespace))
		case 1:
			for k := range groups {
				sts = k
			}
		default:
			return ctrl.Result{}, r.fail(ctx, &b, "AmbiguousStatefulSet", fmt.Sprintf("the pods of several StatefulSets carry policy %s (%v); set spec.statefulSet", p.Name, sortedKeys(groups)))
		}
	}
	pods, ok := groups[sts]
	if !ok {
		return ctrl.Result{}, r.fail(ctx, &b, "NoStatefulSet", fmt.Sprintf("StatefulSet %s has no pod carrying amber.dev/policy=%s", sts, p.Name))
	}
	var maxLag *time.Duration
	if p.Spec.Replica.MaxLag != nil {
		maxLag = &p.Spec.Replica.MaxLag.Duration
	}
	pick, why := PickBackupTarget(probeAll(ctx, r.Dialer, pods, false), p.Spec.Replica.Preference, maxLag)
	if pick == nil {
		return r.waitForReplica(ctx, &b, "StatefulSet "+sts+": "+why)
	}

	orig := b.DeepCopy()
	b.Status.Phase = amberv1.PhaseRunning
	b.Status.StatefulSet = sts
	b.Status.TargetPod = pick.Pod.Name
	setCondition(nil, &b, &b.Status.Conditions, metav1.Condition{Type: CondScheduled, Status: metav1.ConditionTrue,
		Reason: "ReplicaChosen", Message: fmt.Sprintf("pod %s (%s)", pick.Pod.Name, pick.Probe.Role)}, r.Clock)
	started := r.now()
	b.Status.StartedAt = &started
	if err := r.Client.Status().Patch(ctx, &b, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark Backup running: %w", err)
	}
	// When this reconcile returns, a cached Running is stale for a while.
	defer func() { r.mine.Store(b.UID, clock.Or(r.Clock).Now()) }()
	r.Recorder.Eventf(&b, corev1.EventTypeNormal, "Started", "backing up StatefulSet %s on pod %s (%s, lag %s)", sts, pick.Pod.Name, pick.Probe.Role, pick.Probe.Lag)
	log.Info("backup started", "pod", pick.Pod.Name, "role", pick.Probe.Role)

	mode := p.Spec.Mode
	if mode == "" {
		mode = amberv1.ModePhysical
	}
	var res sidecarapi.BackupResult
	// What the status was before the backup ran: a snapshot backup sets
	// conditions and its VolumeSnapshots on the way.
	before := b.DeepCopy()
	if mode == amberv1.ModeSnapshot {
		var sp amberv1.SnapshotSpec
		if p.Spec.Snapshot != nil {
			sp = *p.Spec.Snapshot
		}
		poll := r.SnapshotPoll
		if poll <= 0 {
			poll = time.Second
		}
		run := &snapshotRun{r: r, b: &b, p: &p, sts: sts, pick: pick, log: log,
			lease: durationOr(sp.Lease, DefaultSnapshotLease), timeout: durationOr(sp.Timeout, DefaultSnapshotTimeout), poll: poll}
		res, err = run.run(ctx)
		if err != nil {
			return ctrl.Result{}, r.failFrom(ctx, &b, before, "SnapshotFailed", fmt.Sprintf("pod %s: %v", pick.Pod.Name, err))
		}
	} else if err = func() error {
		sc, err := r.Dialer.Dial(ctx, pick.Pod)
		if err != nil {
			return err
		}
		defer sc.Close()
		res, err = sc.Backup(ctx, sidecarapi.BackupRequest{
			// One name per database: retention keeps the newest N of each
			// name, so a name per Backup object would keep everything.
			Name: b.Namespace + "/" + sts, Mode: string(mode), UploadBytesPerSecond: uploadLimit(&p),
			Tags: map[string]string{"namespace": b.Namespace, "statefulset": sts, "pod": pick.Pod.Name, "policy": p.Name, "backup": b.Name},
		})
		return err
	}(); err != nil {
		return ctrl.Result{}, r.fail(ctx, &b, "BackupFailed", fmt.Sprintf("pod %s: %v", pick.Pod.Name, err))
	}

	orig = before
	finished := r.now()
	b.Status.Phase = amberv1.PhaseSucceeded
	b.Status.FinishedAt = &finished
	b.Status.BackupID = res.ID
	b.Status.Bytes, b.Status.BytesAdded = res.Bytes, res.BytesAdded
	b.Status.FilesRead, b.Status.FilesReused, b.Status.BytesReused = res.FilesRead, res.FilesReused, res.BytesReused
	done := fmt.Sprintf("backup %s stored from pod %s", res.ID, pick.Pod.Name)
	if mode == amberv1.ModeSnapshot {
		done = fmt.Sprintf("snapshot backup %s recorded from pod %s: VolumeSnapshots %s", res.ID, pick.Pod.Name, snapshotList(b.Status.Snapshots))
	}
	setCondition(nil, &b, &b.Status.Conditions, metav1.Condition{Type: CondComplete, Status: metav1.ConditionTrue, Reason: "Succeeded",
		Message: done}, r.Clock)
	if r.Workloads != nil {
		summary, err := r.Workloads.Capture(ctx, &p, sts, res.ID)
		if err != nil {
			setCondition(r.Recorder, &b, &b.Status.Conditions, metav1.Condition{Type: CondWorkload, Status: metav1.ConditionFalse, Reason: "CaptureFailed",
				Message: "the backup is stored, but not the workload's objects: " + err.Error()}, r.Clock)
		} else {
			setCondition(r.Recorder, &b, &b.Status.Conditions, metav1.Condition{Type: CondWorkload, Status: metav1.ConditionTrue, Reason: "Captured", Message: summary}, r.Clock)
		}
	}
	if r.Pruner != nil && (p.Spec.Retention.KeepLast > 0 || p.Spec.Retention.KeepWithin != nil) {
		summary, forgotten, err := r.Pruner.Prune(ctx, &p)
		if err == nil {
			if s := r.pruneSnapshots(ctx, &p, forgotten); s != "" {
				summary += "; " + s
			}
		}
		if err != nil {
			setCondition(r.Recorder, &b, &b.Status.Conditions, metav1.Condition{Type: CondPruned, Status: metav1.ConditionFalse, Reason: "PruneFailed", Message: err.Error()}, r.Clock)
		} else {
			setCondition(r.Recorder, &b, &b.Status.Conditions, metav1.Condition{Type: CondPruned, Status: metav1.ConditionTrue, Reason: "Pruned", Message: summary}, r.Clock)
		}
	}
	if err := r.Client.Status().Patch(ctx, &b, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("record Backup result: %w", err)
	}
	if mode == amberv1.ModeSnapshot {
		r.Recorder.Eventf(&b, corev1.EventTypeNormal, "Succeeded", "snapshot backup %s of StatefulSet %s recorded from pod %s: VolumeSnapshots %s", res.ID, sts, pick.Pod.Name, snapshotList(b.Status.Snapshots))
	} else {
		files := ""
		if res.FilesRead+res.FilesReused > 0 {
			files = fmt.Sprintf("; %d files read, %d reused from the previous backup", res.FilesRead, res.FilesReused)
		}
		r.Recorder.Eventf(&b, corev1.EventTypeNormal, "Succeeded", "backup %s of StatefulSet %s stored from pod %s (%d bytes read, %d added to the repository%s)", res.ID, sts, pick.Pod.Name, res.Bytes, res.BytesAdded, files)
	}
	log.Info("backup succeeded", "pod", pick.Pod.Name, "id", res.ID, "bytes", res.Bytes, "bytes_added", res.BytesAdded, "files_read", res.FilesRead, "files_reused", res.FilesReused)

	porig := p.DeepCopy()
	if p.Status.LastSuccessfulTime == nil || finished.After(p.Status.LastSuccessfulTime.Time) {
		p.Status.LastSuccessfulTime = &finished
		p.Status.LastSuccessfulBackup = b.Name
		if err := r.Client.Status().Patch(ctx, &p, client.MergeFrom(porig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("record last good backup on BackupPolicy %s: %w", p.Name, err)
		}
	}
	return ctrl.Result{}, nil
}

// waitForReplica keeps a Backup Pending while no replica qualifies, for
// up to ReplicaWait from the first time none did: a pod that is starting
// (no IP yet, its sidecar not listening, its role not known), a
// failover, or a standby catching up is usually over within it. The
// condition Scheduled=False says why meanwhile; after the wait the Backup
// fails with that reason. The wait is timed from the condition's
// LastTransitionTime, written by this controller's clock, so a skew
// between the controller and the API server does not shorten it.
func (r *BackupReconciler) waitForReplica(ctx context.Context, b *amberv1.Backup, why string) (ctrl.Result, error) {
	wait := r.ReplicaWait
	if wait == 0 {
		wait = 2 * time.Minute
	}
	now := clock.Or(r.Clock).Now()
	c := meta.FindStatusCondition(b.Status.Conditions, CondScheduled)
	if c != nil && c.Status == metav1.ConditionFalse && now.Sub(c.LastTransitionTime.Time) >= wait {
		return ctrl.Result{}, r.fail(ctx, b, "NoEligibleReplica", fmt.Sprintf("%s (waited %s)", why, wait.Round(time.Second)))
	}
	if wait < 0 {
		return ctrl.Result{}, r.fail(ctx, b, "NoEligibleReplica", why)
	}
	orig := b.DeepCopy()
	b.Status.Phase = amberv1.PhasePending
	setCondition(r.Recorder, b, &b.Status.Conditions, metav1.Condition{Type: CondScheduled, Status: metav1.ConditionFalse,
		Reason: "WaitingForReplica", Message: why}, r.Clock)
	if err := r.Client.Status().Patch(ctx, b, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark Backup waiting: %w", err)
	}
	return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
}

// fail marks b Failed with reason and message, and records a Warning.
func (r *BackupReconciler) fail(ctx context.Context, b *amberv1.Backup, reason, msg string) error {
	return r.failFrom(ctx, b, b.DeepCopy(), reason, msg)
}

// failFrom is fail for a b changed since orig (conditions set on the way):
// the patch carries those changes too.
func (r *BackupReconciler) failFrom(ctx context.Context, b, orig *amberv1.Backup, reason, msg string) error {
	b.Status.Phase = amberv1.PhaseFailed
	b.Status.Error = msg
	finished := r.now()
	b.Status.FinishedAt = &finished
	setCondition(nil, b, &b.Status.Conditions, metav1.Condition{Type: CondComplete, Status: metav1.ConditionFalse, Reason: reason, Message: msg}, r.Clock)
	if err := r.Client.Status().Patch(ctx, b, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("mark Backup failed: %w", err)
	}
	r.Recorder.Event(b, corev1.EventTypeWarning, reason, msg)
	r.log().Warn("backup failed", "namespace", b.Namespace, "backup", b.Name, "reason", reason, "problem", msg)
	return nil
}

func snapshotList(s []amberv1.BackupSnapshot) string {
	var names []string
	for _, t := range s {
		names = append(names, t.VolumeSnapshot)
	}
	return strings.Join(names, ", ")
}
