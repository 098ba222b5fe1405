package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// Labels on the Backups a policy creates.
const (
	LabelPolicy      = "amber.dev/policy"
	LabelStatefulSet = "amber.dev/statefulset"
	LabelScheduled   = "amber.dev/scheduled"
)

// Condition types and reasons.
const (
	CondReady     = "Ready"
	CondArchiving = "Archiving"
	CondComplete  = "Complete"
	CondPruned    = "Pruned"
	// CondScheduled: a replica was chosen for the Backup (False with
	// WaitingForReplica while none qualifies).
	CondScheduled = "Scheduled"
	// CondWorkload: the StatefulSet and its objects were stored with the backup.
	CondWorkload = "WorkloadCaptured"
)

// DefaultArchiveInterval is how often archivers are checked.
const DefaultArchiveInterval = 30 * time.Second

// PolicyReconciler runs schedules and places archivers.
type PolicyReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Clock    clock.Clock
	Dialer   sidecarapi.Dialer
	Logger   *slog.Logger
	// ArchiveInterval is how often archivers are checked; 0: default.
	ArchiveInterval time.Duration

	mu     sync.Mutex
	timers map[types.NamespacedName]clock.Timer
	wake   chan event.GenericEvent
}

func (r *PolicyReconciler) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// SetupWithManager registers the reconciler. Wake-ups come from timers on
// the reconciler's clock, not from the work queue's delays, so a test's
// fake clock drives schedules.
func (r *PolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.timers = map[types.NamespacedName]clock.Timer{}
	r.wake = make(chan event.GenericEvent, 64)
	return ctrl.NewControllerManagedBy(mgr).
		For(&amberv1.BackupPolicy{}).
		Named("backuppolicy").
		WatchesRawSource(source.Channel(r.wake, &handler.EnqueueRequestForObject{})).
		// A pod of a policy appearing, changing or going (a failover)
		// reconciles the policy at once.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podPolicy)).
		Complete(r)
}

func podPolicy(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetAnnotations()[inject.AnnotationPolicy]
	if !ok || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// wakeIn makes the policy be reconciled again d from now on the clock.
func (r *PolicyReconciler) wakeIn(key types.NamespacedName, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.timers[key]; ok {
		t.Stop()
	}
	r.timers[key] = clock.Or(r.Clock).AfterFunc(d, func() {
		r.wake <- event.GenericEvent{Object: &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	})
}

func (r *PolicyReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.timers[key]; ok {
		t.Stop()
		delete(r.timers, key)
	}
}

func (r *PolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p amberv1.BackupPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	orig := p.DeepCopy()
	now := clock.Or(r.Clock).Now()
	var wake []time.Duration

	ready := metav1.Condition{Type: CondReady, Status: metav1.ConditionTrue, Reason: "Valid", Message: "policy is valid", ObservedGeneration: p.Generation}
	if p.Spec.Schedule != "" && !p.Spec.Suspend {
		sched, err := inject.ParseSchedule(p.Spec.Schedule)
		if err != nil {
			ready = metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "BadSchedule", Message: err.Error(), ObservedGeneration: p.Generation}
			p.Status.NextScheduleTime = nil
		} else {
			next, err := r.runSchedule(ctx, &p, sched.Next, now)
			if err != nil {
				return ctrl.Result{}, err
			}
			p.Status.NextScheduleTime = &metav1.Time{Time: next}
			wake = append(wake, next.Sub(now))
		}
	} else {
		p.Status.NextScheduleTime = nil
	}
	if ready.Status == metav1.ConditionTrue {
		var s corev1.Secret
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Repository.CredentialsSecret.Name}, &s)
		if apierrors.IsNotFound(err) {
			ready = metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "SecretMissing", ObservedGeneration: p.Generation,
				Message: fmt.Sprintf("credentials Secret %q does not exist; create it with the repository password under key %q", p.Spec.Repository.CredentialsSecret.Name, passwordKey(&p))}
		} else if err != nil {
			return ctrl.Result{}, fmt.Errorf("read credentials Secret: %w", err)
		}
	}
	r.setCondition(&p, &p.Status.Conditions, ready)
	// The drill controller writes status.drill only (a merge patch of the
	// conditions list would replace it whole); its condition is set here.
	if d := p.Status.Drill; p.Spec.Drills == nil {
		meta.RemoveStatusCondition(&p.Status.Conditions, CondDrill)
	} else if d != nil && (d.Phase == amberv1.PhaseSucceeded || d.Phase == amberv1.PhaseFailed) {
		c := metav1.Condition{Type: CondDrill, Status: metav1.ConditionTrue, Reason: "Succeeded", Message: d.Message, ObservedGeneration: p.Generation}
		if d.Phase == amberv1.PhaseFailed {
			c.Status, c.Reason = metav1.ConditionFalse, "Failed"
		}
		if old := meta.FindStatusCondition(p.Status.Conditions, CondDrill); old == nil || old.Status != c.Status || old.Message != c.Message {
			r.setCondition(&p, &p.Status.Conditions, c)
		}
	}

	if p.Spec.Archive {
		r.placeArchivers(ctx, &p, now)
		interval := r.ArchiveInterval
		if interval <= 0 {
			interval = DefaultArchiveInterval
		}
		wake = append(wake, interval)
	} else {
		p.Status.Archivers = nil
		meta.RemoveStatusCondition(&p.Status.Conditions, CondArchiving)
	}
	p.Status.ObservedGeneration = p.Generation

	// Most reconciles (each policy's timer, a pod's status changing)
	// change nothing: they send no empty patch.
	if !equality.Semantic.DeepEqual(orig.Status, p.Status) {
		if err := r.Client.Status().Patch(ctx, &p, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("update BackupPolicy status: %w", err)
		}
	}
	if len(wake) > 0 {
		d := wake[0]
		for _, w := range wake[1:] {
			d = min(d, w)
		}
		r.wakeIn(req.NamespacedName, d)
	} else {
		r.forget(req.NamespacedName)
	}
	return ctrl.Result{}, nil
}

func passwordKey(p *amberv1.BackupPolicy) string {
	if k := p.Spec.Repository.CredentialsSecret.PasswordKey; k != "" {
		return k
	}
	return "password"
}

// runSchedule creates the Backups due by now and returns the next time one
// is due. Runs missed while the controller was away collapse into one (at
// the latest missed time), as a CronJob's do.
func (r *PolicyReconciler) runSchedule(ctx context.Context, p *amberv1.BackupPolicy, next func(time.Time) time.Time, now time.Time) (time.Time, error) {
	last := p.CreationTimestamp.Time
	if p.Status.LastScheduleTime != nil {
		last = p.Status.LastScheduleTime.Time
	}
	due := time.Time{}
	for t := next(last); !t.IsZero() && !t.After(now); t = next(t) {
		due = t
	}
	if due.IsZero() {
		return next(last), nil
	}
	groups, err := policyPods(ctx, r.Client, p.Namespace, p.Name)
	if err != nil {
		return time.Time{}, err
	}
	if len(groups) == 0 {
		r.Recorder.Eventf(p, corev1.EventTypeWarning, "NoStatefulSet",
			"scheduled backup at %s skipped: no StatefulSet's pods carry %s=%s in namespace %s", due.UTC().Format(time.RFC3339), inject.AnnotationPolicy, p.Name, p.Namespace)
	}
	for _, sts := range sortedKeys(groups) {
		b := &amberv1.Backup{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: p.Namespace,
				Name:      ScheduledBackupName(p.Name, sts, due),
				Labels:    map[string]string{LabelPolicy: p.Name, LabelStatefulSet: sts, LabelScheduled: "true"},
			},
			Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: p.Name}, StatefulSet: sts},
		}
		if err := controllerutil.SetOwnerReference(p, b, r.Client.Scheme()); err != nil {
			return time.Time{}, err
		}
		if err := r.Client.Create(ctx, b); err != nil {
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return time.Time{}, fmt.Errorf("create Backup %s: %w", b.Name, err)
		}
		r.Recorder.Eventf(p, corev1.EventTypeNormal, "BackupScheduled", "created Backup %s of StatefulSet %s for %s", b.Name, sts, due.UTC().Format(time.RFC3339))
		r.log().Info("scheduled backup", "namespace", p.Namespace, "policy", p.Name, "backup", b.Name)
	}
	p.Status.LastScheduleTime = &metav1.Time{Time: due}
	return next(due), nil
}

// ScheduledBackupName names the Backup a schedule creates: policy,
// StatefulSet and the schedule time, so a retried reconcile creates it once.
func ScheduledBackupName(policy, sts string, at time.Time) string {
	name := fmt.Sprintf("%s-%s-%s", policy, sts, at.UTC().Format("20060102-1504"))
	if len(name) > 253 {
		name = name[len(name)-253:]
	}
	return strings.Trim(name, "-.")
}

// placeArchivers keeps one archiver per StatefulSet: it starts archiving
// on the chosen pod first and only then stops it elsewhere, so a move
// leaves no gap (the repository accepts the same segment twice).
func (r *PolicyReconciler) placeArchivers(ctx context.Context, p *amberv1.BackupPolicy, now time.Time) {
	groups, err := policyPods(ctx, r.Client, p.Namespace, p.Name)
	if err != nil {
		r.setCondition(p, &p.Status.Conditions, metav1.Condition{Type: CondArchiving, Status: metav1.ConditionUnknown, Reason: "ListFailed", Message: err.Error()})
		return
	}
	current := map[string]amberv1.ArchiverStatus{}
	for _, a := range p.Status.Archivers {
		current[a.StatefulSet] = a
	}
	var archivers []amberv1.ArchiverStatus
	var problems []string
	for _, sts := range sortedKeys(groups) {
		cands := probeAll(ctx, r.Dialer, groups[sts], true)
		pick, why := PickArchiver(cands, current[sts].Pod)
		if pick == nil {
			problems = append(problems, sts+": "+why)
			continue
		}
		if !pick.Probe.Archiving {
			if err := r.call(ctx, pick.Pod, func(sc sidecarapi.Sidecar) error {
				return sc.StartArchiving(ctx, sidecarapi.ArchiveRequest{UploadBytesPerSecond: uploadLimit(p)})
			}); err != nil {
				problems = append(problems, fmt.Sprintf("%s: start archiving on %s: %v", sts, pick.Pod.Name, err))
				r.Recorder.Eventf(p, corev1.EventTypeWarning, "ArchiverStartFailed", "StatefulSet %s: start archiving on pod %s: %v", sts, pick.Pod.Name, err)
				continue
			}
			prev := current[sts].Pod
			if prev != "" && prev != pick.Pod.Name {
				r.Recorder.Eventf(p, corev1.EventTypeNormal, "ArchiverMoved", "StatefulSet %s: archiver moved from pod %s to pod %s", sts, prev, pick.Pod.Name)
			} else {
				r.Recorder.Eventf(p, corev1.EventTypeNormal, "ArchiverStarted", "StatefulSet %s: pod %s archives", sts, pick.Pod.Name)
			}
		}
		for _, c := range cands {
			if c.Pod.Name == pick.Pod.Name || c.Err != nil || !c.Probe.Archiving {
				continue
			}
			if err := r.call(ctx, c.Pod, func(sc sidecarapi.Sidecar) error { return sc.StopArchiving(ctx) }); err != nil {
				problems = append(problems, fmt.Sprintf("%s: stop archiving on %s: %v", sts, c.Pod.Name, err))
				r.Recorder.Eventf(p, corev1.EventTypeWarning, "ArchiverStopFailed", "StatefulSet %s: a second archiver on pod %s did not stop: %v", sts, c.Pod.Name, err)
				continue
			}
			r.Recorder.Eventf(p, corev1.EventTypeNormal, "ArchiverStopped", "StatefulSet %s: pod %s no longer archives", sts, c.Pod.Name)
		}
		since := metav1.Time{Time: now}
		if prev, ok := current[sts]; ok && prev.Pod == pick.Pod.Name {
			since = prev.Since
		}
		as := amberv1.ArchiverStatus{StatefulSet: sts, Pod: pick.Pod.Name, Since: since}
		// The window as the archiver last computed it; when it cannot be
		// read now, the last one known stays.
		if prev, ok := current[sts]; ok && prev.Pod == pick.Pod.Name {
			as.RecoverableFrom, as.RecoverableTo, as.Gaps = prev.RecoverableFrom, prev.RecoverableTo, prev.Gaps
		}
		// Read with the probe on the pod that already archived; the pod
		// that was just told to start is asked once more.
		st := pick.Status
		if st == nil {
			_ = r.call(ctx, pick.Pod, func(sc sidecarapi.Sidecar) error {
				s, err := sc.Status(ctx)
				if err == nil {
					st = &s
				}
				return err
			})
		}
		if st != nil && !st.ArchivedUpTo.IsZero() {
			as.RecoverableTo = &metav1.Time{Time: st.ArchivedUpTo}
			as.RecoverableFrom = nil
			if !st.WindowStart.IsZero() {
				as.RecoverableFrom = &metav1.Time{Time: st.WindowStart}
			}
			as.Gaps = st.Gaps
		}
		archivers = append(archivers, as)
	}
	p.Status.Archivers = archivers
	cond := metav1.Condition{Type: CondArchiving, Status: metav1.ConditionTrue, Reason: "Archiving", Message: "one archiver per StatefulSet"}
	if len(problems) > 0 {
		cond = metav1.Condition{Type: CondArchiving, Status: metav1.ConditionFalse, Reason: "NoArchiver", Message: strings.Join(problems, "; ")}
	} else if len(groups) == 0 {
		cond = metav1.Condition{Type: CondArchiving, Status: metav1.ConditionFalse, Reason: "NoStatefulSet", Message: "no StatefulSet's pods carry the policy"}
	}
	r.setCondition(p, &p.Status.Conditions, cond)
}

func (r *PolicyReconciler) call(ctx context.Context, pod *corev1.Pod, f func(sidecarapi.Sidecar) error) error {
	sc, err := r.Dialer.Dial(ctx, pod)
	if err != nil {
		return err
	}
	defer sc.Close()
	return f(sc)
}

// setCondition sets a condition and records an Event when it changes.
func (r *PolicyReconciler) setCondition(obj client.Object, conds *[]metav1.Condition, c metav1.Condition) {
	setCondition(r.Recorder, obj, conds, c, r.Clock)
}

func setCondition(rec record.EventRecorder, obj client.Object, conds *[]metav1.Condition, c metav1.Condition, clk clock.Clock) {
	old := meta.FindStatusCondition(*conds, c.Type)
	c.ObservedGeneration = obj.GetGeneration()
	c.LastTransitionTime = metav1.Time{Time: clock.Or(clk).Now()}
	changed := old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message
	meta.SetStatusCondition(conds, c)
	if changed && rec != nil {
		typ := corev1.EventTypeNormal
		if c.Status == metav1.ConditionFalse {
			typ = corev1.EventTypeWarning
		}
		rec.Eventf(obj, typ, c.Reason, "%s=%s: %s", c.Type, c.Status, c.Message)
	}
}

func uploadLimit(p *amberv1.BackupPolicy) int64 {
	if q := p.Spec.Throttle.UploadBytesPerSecond; q != nil {
		return q.Value()
	}
	return 0
}
