package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// LabelDrill marks a drill's Restore with its BackupPolicy.
const LabelDrill = "amber.dev/drill"

// CondDrill is the BackupPolicy condition of the last drill.
const CondDrill = "DrillSucceeded"

// DefaultDrillTimeout bounds one drill.
const DefaultDrillTimeout = 15 * time.Minute

// Prober runs a drill's probe on the clone's database.
type Prober interface {
	// Probe connects to the database of pod (the clone's) with the
	// policy's credentials and runs query; it fails when the query fails
	// or returns no row.
	Probe(ctx context.Context, p *amberv1.BackupPolicy, pod *corev1.Pod, query string) error
}

// DrillMetrics receives each finished drill's figures.
type DrillMetrics interface {
	Drill(namespace, policy string, success bool, rto, rpo time.Duration)
}

// DrillReconciler runs the restore drills of BackupPolicies.
type DrillReconciler struct {
	Client client.Client
	// Reader lists the clone's objects uncached.
	Reader   client.Reader
	Recorder record.EventRecorder
	Clock    clock.Clock
	Prober   Prober
	Metrics  DrillMetrics
	Logger   *slog.Logger
	// Poll is how often a running drill is looked at; default 2 s.
	Poll time.Duration
}

func (r *DrillReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&amberv1.BackupPolicy{}).Named("drill").Complete(r)
}

func (r *DrillReconciler) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *DrillReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p amberv1.BackupPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	d := p.Spec.Drills
	st := p.Status.Drill
	if d == nil {
		if st != nil && st.Phase == amberv1.PhaseRunning {
			// Drills turned off mid-drill: remove the clone, say so.
			var rs amberv1.Restore
			if err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: st.Restore}, &rs); err == nil {
				r.cleanup(ctx, &rs)
			}
			orig := p.DeepCopy()
			st.Phase, st.Message = "", "drill "+st.Restore+" cancelled: spec.drills was removed"
			return ctrl.Result{}, r.Client.Status().Patch(ctx, &p, client.MergeFrom(orig))
		}
		return ctrl.Result{}, nil
	}
	now := clock.Or(r.Clock).Now()
	if st != nil && st.Phase == amberv1.PhaseRunning {
		return r.follow(ctx, &p, now)
	}
	sched, err := inject.ParseSchedule(d.Schedule)
	if err != nil {
		return ctrl.Result{}, r.finish(ctx, &p, nil, false, "BadSchedule", "spec.drills.schedule: "+err.Error(), 0, 0)
	}
	last := p.CreationTimestamp.Time
	if st != nil && st.LastScheduleTime != nil {
		last = st.LastScheduleTime.Time
	}
	due := time.Time{}
	for t := sched.Next(last); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		due = t
	}
	orig := p.DeepCopy()
	if p.Status.Drill == nil {
		p.Status.Drill = &amberv1.DrillStatus{}
	}
	if due.IsZero() {
		next := sched.Next(last)
		if p.Status.Drill.NextScheduleTime == nil || !p.Status.Drill.NextScheduleTime.Time.Equal(next) {
			p.Status.Drill.NextScheduleTime = &metav1.Time{Time: next}
			if err := r.Client.Status().Patch(ctx, &p, client.MergeFrom(orig)); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
	}
	return r.start(ctx, &p, orig, due, sched.Next(due), now)
}

// start creates the drill's Restore.
func (r *DrillReconciler) start(ctx context.Context, p, orig *amberv1.BackupPolicy, due, next, now time.Time) (ctrl.Result, error) {
	d := p.Spec.Drills
	ds := p.Status.Drill
	ds.LastScheduleTime = &metav1.Time{Time: due}
	ds.NextScheduleTime = &metav1.Time{Time: next}
	ds.StartedAt = &metav1.Time{Time: now}
	ds.FinishedAt, ds.RTO, ds.RPO = nil, nil, nil
	sts := d.StatefulSet
	var arch *amberv1.ArchiverStatus
	for i := range p.Status.Archivers {
		a := &p.Status.Archivers[i]
		if sts == "" || a.StatefulSet == sts {
			arch = a
			sts = a.StatefulSet
			break
		}
	}
	if sts == "" {
		return ctrl.Result{}, r.finish(ctx, p, orig, false, "NoStatefulSet", "no StatefulSet to drill: none archives under this policy; set spec.drills.statefulSet", 0, 0)
	}
	name := fmt.Sprintf("%s-drill-%s", p.Name, due.UTC().Format("20060102-1504"))
	rs := &amberv1.Restore{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: name, Labels: map[string]string{LabelDrill: p.Name}},
		Spec: amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: p.Name}, SourceStatefulSet: sts,
			CloneName: truncName(sts+"-drill-"+p.Name, 52)},
	}
	ds.Target = string(amberv1.DrillLatest)
	if d.Target == amberv1.DrillRandom {
		if arch == nil || arch.RecoverableFrom == nil || arch.RecoverableTo == nil || !arch.RecoverableTo.After(arch.RecoverableFrom.Time) {
			return ctrl.Result{}, r.finish(ctx, p, orig, false, "NoWindow", "a random-point drill needs a recoverable window; the archiver reports none yet", 0, 0)
		}
		at := randomPoint(arch.RecoverableFrom.Time, arch.RecoverableTo.Time, rand.Int64N)
		rs.Spec.PointInTime = &metav1.Time{Time: at}
		ds.Target = at.UTC().Format(time.RFC3339Nano)
	}
	if err := controllerutil.SetOwnerReference(p, rs, r.Client.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Client.Create(ctx, rs); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create drill Restore %s: %w", name, err)
	}
	ds.Restore = name
	ds.Phase = amberv1.PhaseRunning
	ds.Message = fmt.Sprintf("restoring StatefulSet %s to %s into clone %s", sts, ds.Target, rs.Spec.CloneName)
	if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(p, corev1.EventTypeNormal, "DrillStarted", "restore drill %s: %s", name, ds.Message)
	return ctrl.Result{RequeueAfter: r.poll()}, nil
}

func (r *DrillReconciler) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return 2 * time.Second
}

// follow waits for the drill's Restore, probes the clone, records the
// result and deletes the clone.
func (r *DrillReconciler) follow(ctx context.Context, p *amberv1.BackupPolicy, now time.Time) (ctrl.Result, error) {
	ds := p.Status.Drill
	timeout := DefaultDrillTimeout
	if t := p.Spec.Drills.Timeout; t != nil && t.Duration > 0 {
		timeout = t.Duration
	}
	var rs amberv1.Restore
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ds.Restore}, &rs)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.finish(ctx, p, nil, false, "RestoreGone", "the drill's Restore "+ds.Restore+" was deleted before it finished", 0, 0)
	} else if err != nil {
		return ctrl.Result{}, err
	}
	switch rs.Status.Phase {
	case amberv1.PhaseFailed:
		err := r.finish(ctx, p, nil, false, "RestoreFailed", "the drill's restore failed: "+rs.Status.Error, 0, 0)
		r.cleanup(ctx, &rs)
		return ctrl.Result{}, err
	case amberv1.PhaseSucceeded:
	default:
		if ds.StartedAt != nil && now.Sub(ds.StartedAt.Time) > timeout {
			err := r.finish(ctx, p, nil, false, "Timeout", fmt.Sprintf("the drill's restore did not finish within %s (last: %s)", timeout, rs.Status.Progress), 0, 0)
			r.cleanup(ctx, &rs)
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: r.poll()}, nil
	}
	if q := p.Spec.Drills.Probe; q != "" {
		var pod corev1.Pod
		err := r.Reader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: rs.Status.CloneName + "-0"}, &pod)
		if err == nil {
			if r.Prober == nil {
				err = fmt.Errorf("this controller cannot run probes")
			} else {
				err = r.Prober.Probe(ctx, p, &pod, q)
			}
		}
		if err != nil {
			if ds.StartedAt != nil && now.Sub(ds.StartedAt.Time) <= timeout && strings.Contains(err.Error(), "recovery") {
				return ctrl.Result{RequeueAfter: r.poll()}, nil
			}
			ferr := r.finish(ctx, p, nil, false, "ProbeFailed", "the clone restored, but the probe failed: "+err.Error(), 0, 0)
			r.cleanup(ctx, &rs)
			return ctrl.Result{}, ferr
		}
	}
	rto := clock.Or(r.Clock).Now().Sub(rs.CreationTimestamp.Time)
	if rs.Status.RTO != nil && p.Spec.Drills.Probe == "" {
		rto = rs.Status.RTO.Duration
	}
	var rpo time.Duration
	if t := rs.Status.LogReachesTime; t != nil {
		rpo = nonNegative(rs.CreationTimestamp.Sub(t.Time))
	}
	msg := fmt.Sprintf("restored StatefulSet %s to %s in %s (RTO), RPO %s", rs.Spec.SourceStatefulSet, ds.Target, rto.Round(100*time.Millisecond), rpo.Round(100*time.Millisecond))
	if p.Spec.Drills.Probe != "" {
		msg += "; probe passed"
	}
	err = r.finish(ctx, p, nil, true, "Succeeded", msg, rto, rpo)
	r.cleanup(ctx, &rs)
	return ctrl.Result{RequeueAfter: time.Second}, err
}

// finish records the drill's result on the policy, as an Event and in the
// metrics. A failure is a Warning Event and DrillSucceeded=False.
func (r *DrillReconciler) finish(ctx context.Context, p, orig *amberv1.BackupPolicy, ok bool, reason, msg string, rto, rpo time.Duration) error {
	if orig == nil {
		orig = p.DeepCopy()
	}
	if p.Status.Drill == nil {
		p.Status.Drill = &amberv1.DrillStatus{}
	}
	ds := p.Status.Drill
	now := metav1.Time{Time: clock.Or(r.Clock).Now()}
	ds.FinishedAt = &now
	ds.Message = msg
	if ok {
		ds.Phase = amberv1.PhaseSucceeded
		ds.RTO, ds.RPO = &metav1.Duration{Duration: rto}, &metav1.Duration{Duration: rpo}
		ds.LastSuccessfulTime = &now
	} else {
		ds.Phase = amberv1.PhaseFailed
		ds.RTO, ds.RPO = nil, nil
	}
	if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("record the drill on BackupPolicy %s: %w", p.Name, err)
	}
	if r.Metrics != nil {
		r.Metrics.Drill(p.Namespace, p.Name, ok, rto, rpo)
	}
	if ok {
		r.Recorder.Event(p, corev1.EventTypeNormal, "DrillSucceeded", msg)
		r.log().Info("restore drill succeeded", "namespace", p.Namespace, "policy", p.Name, "rto", rto, "rpo", rpo)
	} else {
		r.Recorder.Event(p, corev1.EventTypeWarning, "DrillFailed", reason+": "+msg)
		r.log().Error("restore drill failed", "namespace", p.Namespace, "policy", p.Name, "reason", reason, "problem", msg)
	}
	return nil
}

// cleanup deletes the drill's clone: its StatefulSet, Services, PVCs and
// the Restore.
func (r *DrillReconciler) cleanup(ctx context.Context, rs *amberv1.Restore) {
	sel := client.MatchingLabels{workload.LabelRestore: rs.Name}
	ns := client.InNamespace(rs.Namespace)
	bg := client.PropagationPolicy(metav1.DeletePropagationBackground)
	del := func(o client.Object) {
		if err := r.Client.Delete(ctx, o, bg); err != nil && !apierrors.IsNotFound(err) {
			r.log().Warn("drill cleanup", "restore", rs.Name, "object", o.GetName(), "error", err)
		}
	}
	var stss appsv1.StatefulSetList
	if err := r.Reader.List(ctx, &stss, ns, sel); err == nil {
		for i := range stss.Items {
			del(&stss.Items[i])
		}
	}
	var svcs corev1.ServiceList
	if err := r.Reader.List(ctx, &svcs, ns, sel); err == nil {
		for i := range svcs.Items {
			del(&svcs.Items[i])
		}
	}
	del(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: rs.Status.CloneName + "-0"}})
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.Reader.List(ctx, &pvcs, ns, sel); err == nil {
		for i := range pvcs.Items {
			del(&pvcs.Items[i])
		}
	}
	del(rs)
}

func truncName(s string, n int) string {
	if len(s) > n {
		s = strings.TrimRight(s[:n], "-.")
	}
	return s
}

// randomPoint is a random instant of the window [from, to) in whole
// seconds, as a Restore's pointInTime holds it (metav1.Time drops the
// fraction): truncated, and moved up a second when that falls before
// from, where no backup is consistent yet. n(k) returns a number in [0, k).
func randomPoint(from, to time.Time, n func(int64) int64) time.Time {
	at := from.Add(time.Duration(n(int64(to.Sub(from))))).Truncate(time.Second)
	if at.Before(from) {
		at = at.Add(time.Second)
	}
	return at
}
