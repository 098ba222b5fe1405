package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
)

// WorkloadStore keeps workloads in repositories.
type WorkloadStore interface {
	// Capture stores StatefulSet sts of p's namespace with backup backupID
	// and returns a one-line summary (object kinds and names only).
	Capture(ctx context.Context, p *amberv1.BackupPolicy, sts, backupID string) (string, error)
	// Find returns the newest workload of sourceNS/sts in the repository
	// (credentials from namespace ns) and backup backupRef when set.
	Find(ctx context.Context, ns string, spec amberv1.RepositorySpec, sourceNS, sts, backupRef string) (*repo.Workload, *repo.Manifest, error)
}

// RestoreReconciler restores backups into clone StatefulSets.
type RestoreReconciler struct {
	Client client.Client
	// Reader reads StatefulSets uncached.
	Reader    client.Reader
	Recorder  record.EventRecorder
	Clock     clock.Clock
	Workloads WorkloadStore
	// Image and PullPolicy of the restoring init container (amber's image).
	Image      string
	PullPolicy corev1.PullPolicy
	Logger     *slog.Logger
	// Poll is how often a running restore is looked at; default 2 s.
	Poll time.Duration
	// Logs returns the last lines of a container's log (nil: not read).
	// A logical clone restore whose container restarted without the
	// kubelet keeping its last state is recognised by the report the
	// restarted container logs.
	Logs func(ctx context.Context, namespace, pod, container string) (string, error)
}

func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&amberv1.Restore{}).Named("restore").Complete(r)
}

func (r *RestoreReconciler) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *RestoreReconciler) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return 2 * time.Second
}

func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var rs amberv1.Restore
	if err := r.Client.Get(ctx, req.NamespacedName, &rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch rs.Status.Phase {
	case amberv1.PhaseFailed, amberv1.PhaseSucceeded:
		return ctrl.Result{}, nil
	case amberv1.PhaseRunning:
		return r.follow(ctx, &rs)
	}
	return r.start(ctx, &rs)
}

// CloneName is the clone StatefulSet's name for rs.
func CloneName(rs *amberv1.Restore) string {
	if rs.Spec.CloneName != "" {
		return rs.Spec.CloneName
	}
	n := rs.Spec.SourceStatefulSet + "-restore-" + rs.Name
	if len(n) > 52 {
		n = strings.TrimRight(n[:52], "-.")
	}
	return n
}

// start finds the captured workload and creates the clone.
func (r *RestoreReconciler) start(ctx context.Context, rs *amberv1.Restore) (ctrl.Result, error) {
	spec := rs.Spec.Repository
	engine := rs.Spec.Engine
	if ref := rs.Spec.PolicyRef; ref != nil {
		var p amberv1.BackupPolicy
		key := types.NamespacedName{Namespace: rs.Namespace, Name: ref.Name}
		err := r.Client.Get(ctx, key, &p)
		if apierrors.IsNotFound(err) && r.Reader != nil {
			// The cache may not have seen a policy created together with
			// the Restore (one kubectl apply): ask the API server before
			// failing for good.
			err = r.Reader.Get(ctx, key, &p)
		}
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.fail(ctx, rs, "PolicyNotFound", fmt.Sprintf("BackupPolicy %q does not exist in namespace %s", ref.Name, rs.Namespace))
		} else if err != nil {
			return ctrl.Result{}, err
		}
		spec = p.Spec.Repository.DeepCopy()
		if engine == "" {
			engine = p.Spec.Engine
		}
	} else if engine == "" {
		return ctrl.Result{}, r.fail(ctx, rs, "Invalid", "spec.engine is required with spec.repository")
	}
	if spec == nil {
		return ctrl.Result{}, r.fail(ctx, rs, "Invalid", "give spec.policyRef or spec.repository")
	}
	// PostgreSQL: a physical restore before the server starts; MySQL and
	// MariaDB (whose plugin runs the mariadb client, so in the database's
	// image) and MongoDB: a logical restore into the clone's server once
	// it runs.
	logical := engine == amberv1.EngineMySQL || engine == amberv1.EngineMongoDB
	if engine != amberv1.EnginePostgres && !logical {
		return ctrl.Result{}, r.fail(ctx, rs, "NotImplemented", fmt.Sprintf(
			"restoring %s into a clone is not implemented (PostgreSQL, MySQL/MariaDB and MongoDB only); restore with `amber restore` instead", engine))
	}
	if r.Workloads == nil || r.Image == "" {
		return ctrl.Result{}, r.fail(ctx, rs, "NotConfigured", "this controller has no repository access or no amber image for restores (--sidecar-image)")
	}
	srcNS := rs.Spec.SourceNamespace
	if srcNS == "" {
		srcNS = rs.Namespace
	}
	w, m, err := r.Workloads.Find(ctx, rs.Namespace, *spec, srcNS, rs.Spec.SourceStatefulSet, rs.Spec.BackupID)
	if err != nil {
		return ctrl.Result{}, r.fail(ctx, rs, "WorkloadNotFound", err.Error())
	}
	var skipped []string
	if m == nil && engine == amberv1.EnginePostgres && (rs.Spec.PointInTime != nil || rs.Spec.Position != "") {
		// A snapshot backup may be the best base; amber restore in the
		// clone chooses among physical ones only.
		if m, skipped, err = r.snapshotBase(ctx, rs, *spec, srcNS); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A MySQL/MariaDB physical or snapshot backup is restored into the
	// clone's data directory before the server starts (mysqlclone.go).
	dataDir := ""
	if mysqlDataDirClone(engine, m) {
		logical, dataDir = false, mysqlDataDir(m)
	}
	if m != nil && (rs.Spec.PointInTime != nil || rs.Spec.Position != "") && logical {
		return ctrl.Result{}, r.fail(ctx, rs, "Invalid", fmt.Sprintf(
			"backupID together with pointInTime or position is supported for PostgreSQL and for MySQL/MariaDB physical and snapshot backups only; for a logical %s backup give one of them", engine))
	}
	if m != nil && rs.Spec.PointInTime != nil && m.ConsistentTime.After(rs.Spec.PointInTime.Time) {
		return ctrl.Result{}, r.fail(ctx, rs, "Invalid", fmt.Sprintf("backup %s is consistent only from %s, after pointInTime %s: give a later pointInTime or an earlier backup",
			m.ID.Short(), m.ConsistentTime.UTC().Format(time.RFC3339Nano), rs.Spec.PointInTime.UTC().Format(time.RFC3339Nano)))
	}
	var snaps map[string]workload.SnapshotSource
	if m != nil && m.Mode == repo.ModeSnapshot {
		var reason, msg string
		snaps, reason, msg, err = r.snapshotSources(ctx, rs, m, engine)
		if err != nil {
			return ctrl.Result{}, err
		}
		if reason != "" {
			return ctrl.Result{}, r.fail(ctx, rs, reason, msg)
		}
	}
	var args []string
	var desc string
	switch {
	case m != nil && rs.Spec.PointInTime != nil:
		t := rs.Spec.PointInTime.UTC().Format(time.RFC3339Nano)
		args, desc = []string{"--backup", m.ID.String(), "--to-time", t}, "time "+t+" from backup "+m.ID.Short()
	case m != nil && rs.Spec.Position != "":
		args, desc = []string{"--backup", m.ID.String(), "--to-position", rs.Spec.Position}, "position "+rs.Spec.Position+" from backup "+m.ID.Short()
	case m != nil:
		args = []string{"--backup", m.ID.String()}
		desc = "backup " + m.ID.Short()
		if m.Position != "" && !logical {
			args = append(args, "--to-position", m.Position)
			desc += " (consistent at " + m.Position + ")"
		}
	case rs.Spec.PointInTime != nil:
		t := rs.Spec.PointInTime.UTC().Format(time.RFC3339Nano)
		args, desc = []string{"--to-time", t}, "time "+t
	case rs.Spec.Position != "":
		args, desc = []string{"--to-position", rs.Spec.Position}, "position "+rs.Spec.Position
	case logical:
		desc = "the newest logical backup (no archived log applied)"
	default:
		desc = "the latest archived log"
	}
	if snaps != nil {
		desc += " from VolumeSnapshots " + snapshotSourceList(snaps)
	}
	desc += skippedNote(skipped)
	image := rs.Spec.Image
	if image == "" {
		image = r.Image
	}
	name := CloneName(rs)
	cl, err := workload.BuildClone(w, workload.CloneOptions{Name: name, Namespace: rs.Namespace, Restore: rs.Name, Image: image,
		PullPolicy: r.PullPolicy, Engine: string(engine), RepoURL: spec.URL, CredentialsSecret: spec.CredentialsSecret.Name,
		PasswordKey: spec.CredentialsSecret.PasswordKey, TargetArgs: args, Description: desc, Logical: logical,
		InDatabaseImage: engine == amberv1.EngineMySQL, Snapshots: snaps, DataDir: dataDir})
	if err != nil {
		return ctrl.Result{}, r.fail(ctx, rs, "BadWorkload", err.Error())
	}
	var existing appsv1.StatefulSet
	err = r.Reader.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: name}, &existing)
	if err == nil && existing.Labels[workload.LabelRestore] != rs.Name {
		return ctrl.Result{}, r.fail(ctx, rs, "CloneExists", fmt.Sprintf("StatefulSet %s/%s exists and is not this Restore's clone; set spec.cloneName", rs.Namespace, name))
	} else if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	var created []string
	for _, c := range cl.ConfigMaps {
		if err := r.Client.Create(ctx, c); err == nil {
			created = append(created, "ConfigMap/"+c.Name)
		} else if !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create ConfigMap %s: %w", c.Name, err)
		}
	}
	for _, s := range cl.Secrets {
		if err := r.Client.Create(ctx, s); err == nil {
			created = append(created, "Secret/"+s.Name)
		} else if !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create Secret %s: %w", s.Name, err) // never the Secret's content
		}
	}
	for _, s := range cl.Services {
		if err := r.Client.Create(ctx, s); err == nil {
			created = append(created, "Service/"+s.Name)
		} else if !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create Service %s: %w", s.Name, err)
		}
	}
	if err := r.Client.Create(ctx, cl.StatefulSet); err == nil {
		created = append(created, "StatefulSet/"+name)
	} else if !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create StatefulSet %s: %w", name, err)
	}
	orig := rs.DeepCopy()
	rs.Status.Phase = amberv1.PhaseRunning
	rs.Status.CloneName = name
	if m != nil {
		rs.Status.BackupID = m.ID.String()
	}
	rs.Status.Progress = "clone created; waiting for pod " + name + "-0"
	setCondition(nil, rs, &rs.Status.Conditions, metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "Restoring",
		Message: fmt.Sprintf("restoring %s/%s into StatefulSet %s to %s", srcNS, rs.Spec.SourceStatefulSet, name, desc)}, r.Clock)
	if err := r.Client.Status().Patch(ctx, rs, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("update Restore status: %w", err)
	}
	r.Recorder.Eventf(rs, corev1.EventTypeNormal, "CloneCreated", "restoring %s/%s (workload %s) to %s: created %s",
		srcNS, rs.Spec.SourceStatefulSet, w.ID.Short(), desc, strings.Join(created, ", "))
	r.log().Info("restore clone created", "namespace", rs.Namespace, "restore", rs.Name, "clone", name, "target", desc)
	return ctrl.Result{RequeueAfter: r.poll()}, nil
}

// restoreReport is what `amber restore --report-file` writes.
type restoreReport struct {
	Backup         string    `json:"backup"`
	Position       string    `json:"position"`
	ConsistentTime time.Time `json:"consistent_time"`
	Target         string    `json:"target"`
	LogReaches     string    `json:"log_reaches"`
	LogReachesTime time.Time `json:"log_reaches_time"`
	Duration       float64   `json:"duration_s"`
}

// follow watches the clone's pod until its database is ready.
func (r *RestoreReconciler) follow(ctx context.Context, rs *amberv1.Restore) (ctrl.Result, error) {
	var pod corev1.Pod
	err := r.Reader.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: rs.Status.CloneName + "-0"}, &pod)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, "waiting for pod "+rs.Status.CloneName+"-0")
	} else if err != nil {
		return ctrl.Result{}, err
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == workload.RestoreContainer {
			return r.followLogical(ctx, rs, &pod)
		}
	}
	var init *corev1.ContainerStatus
	for i := range pod.Status.InitContainerStatuses {
		st := &pod.Status.InitContainerStatuses[i]
		switch st.Name {
		case workload.RestoreContainer:
			init = st
		case workload.InstallContainer:
			// MySQL's restore runs in the database's image, with amber
			// copied in by this container first.
			for _, s := range []corev1.ContainerState{st.State, st.LastTerminationState} {
				if t := s.Terminated; t != nil && t.ExitCode != 0 {
					return ctrl.Result{}, r.fail(ctx, rs, "RestoreFailed", fmt.Sprintf("the %s init container of pod %s failed (exit %d): %s",
						workload.InstallContainer, pod.Name, t.ExitCode, lastLines(t.Message, 8)))
				}
			}
		}
	}
	if init == nil {
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, "pod "+pod.Name+" is "+string(pod.Status.Phase)+": waiting for it to be scheduled")
	}
	for _, st := range []corev1.ContainerState{init.State, init.LastTerminationState} {
		if t := st.Terminated; t != nil && t.ExitCode != 0 {
			return ctrl.Result{}, r.fail(ctx, rs, "RestoreFailed", fmt.Sprintf("the %s init container of pod %s failed (exit %d): %s",
				workload.RestoreContainer, pod.Name, t.ExitCode, lastLines(t.Message, 8)))
		}
	}
	switch {
	case init.State.Waiting != nil:
		msg := "pod " + pod.Name + ": restore container waiting (" + init.State.Waiting.Reason + ")"
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, msg)
	case init.State.Running != nil:
		msg := "restoring the data directory from the repository"
		for _, c := range pod.Spec.InitContainers {
			if c.Name == workload.RestoreContainer && slices.Contains(c.Args, "--snapshot-data") {
				msg = "writing the snapshot backup's record into the data directory restored from its VolumeSnapshots"
			}
		}
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, msg)
	}
	t := init.State.Terminated
	var ready *metav1.Time
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			lt := c.LastTransitionTime
			ready = &lt
		}
	}
	if ready == nil {
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, "data restored; the database is recovering up to the target")
	}
	return ctrl.Result{}, r.succeed(ctx, rs, ready, t)
}

// succeed marks rs Succeeded: the clone was ready at ready; t is the
// restoring container's run (nil when not known), its termination message
// the report of `amber restore --report-file`.
func (r *RestoreReconciler) succeed(ctx context.Context, rs *amberv1.Restore, ready *metav1.Time, t *corev1.ContainerStateTerminated) error {
	orig := rs.DeepCopy()
	rs.Status.Phase = amberv1.PhaseSucceeded
	rs.Status.Progress = "the clone's database is ready"
	rs.Status.ReadyTime = ready
	req := rs.CreationTimestamp.Time
	rs.Status.RTO = &metav1.Duration{Duration: ready.Sub(req)}
	if t != nil {
		loaded(rs, t)
		rs.Status.Timings.Recovery = &metav1.Duration{Duration: nonNegative(ready.Sub(t.FinishedAt.Time))}
	}
	setCondition(r.Recorder, rs, &rs.Status.Conditions, metav1.Condition{Type: CondReady, Status: metav1.ConditionTrue, Reason: "Ready",
		Message: fmt.Sprintf("StatefulSet %s's database is ready, %s after the request", rs.Status.CloneName, rs.Status.RTO.Duration.Round(100*time.Millisecond))}, r.Clock)
	if err := r.Client.Status().Patch(ctx, rs, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("update Restore status: %w", err)
	}
	r.Recorder.Eventf(rs, corev1.EventTypeNormal, "Restored", "clone %s ready; RTO %s", rs.Status.CloneName, rs.Status.RTO.Duration.Round(100*time.Millisecond))
	return nil
}

// loaded records in rs what the restore container's end t says: when it
// started and how long it ran (Timings), and its report (termination
// message): the backup and the point reached.
func loaded(rs *amberv1.Restore, t *corev1.ContainerStateTerminated) {
	req := rs.CreationTimestamp.Time
	rs.Status.Timings = &amberv1.RestoreTimings{
		Scheduling:   &metav1.Duration{Duration: nonNegative(t.StartedAt.Sub(req))},
		DataTransfer: &metav1.Duration{Duration: nonNegative(t.FinishedAt.Sub(t.StartedAt.Time))},
	}
	var rep restoreReport
	if t.Message != "" && json.Unmarshal([]byte(t.Message), &rep) == nil {
		rs.Status.BackupID = rep.Backup
		rs.Status.PointReached = pointReached(rs, &rep)
		if !rep.LogReachesTime.IsZero() {
			rs.Status.LogReachesTime = &metav1.Time{Time: rep.LogReachesTime}
		}
	}
}

// recordedLoad is the restore container's end as loaded recorded it in
// rs (without its message, already applied), or nil.
func recordedLoad(rs *amberv1.Restore) *corev1.ContainerStateTerminated {
	tm := rs.Status.Timings
	if tm == nil || tm.Scheduling == nil || tm.DataTransfer == nil {
		return nil
	}
	start := rs.CreationTimestamp.Add(tm.Scheduling.Duration)
	return &corev1.ContainerStateTerminated{StartedAt: metav1.Time{Time: start}, FinishedAt: metav1.Time{Time: start.Add(tm.DataTransfer.Duration)}}
}

// followLogical watches a clone whose restore container loads a logical
// backup into its running server: it is done when that container has
// exited 0 (its termination message the report; the kubelet restarts it
// and it only waits then) and the pod is Ready. The end is recorded in the
// Restore's status when first seen: the restarted container's last state,
// which would say it, is kept by the kubelet only on a best-effort basis
// and was seen empty on the test bed's real kubelet (kubernetes#101044).
func (r *RestoreReconciler) followLogical(ctx context.Context, rs *amberv1.Restore, pod *corev1.Pod) (ctrl.Result, error) {
	find := func(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
		return nil
	}
	failed := func(name string, st *corev1.ContainerStatus) error {
		if st == nil {
			return nil
		}
		for _, s := range []corev1.ContainerState{st.State, st.LastTerminationState} {
			if t := s.Terminated; t != nil && t.ExitCode != 0 {
				return r.fail(ctx, rs, "RestoreFailed", fmt.Sprintf("the %s container of pod %s failed (exit %d): %s",
					name, pod.Name, t.ExitCode, lastLines(t.Message, 8)))
			}
		}
		return nil
	}
	if err := failed(workload.InstallContainer, find(pod.Status.InitContainerStatuses, workload.InstallContainer)); err != nil || rs.Status.Phase == amberv1.PhaseFailed {
		return ctrl.Result{}, err
	}
	st := find(pod.Status.ContainerStatuses, workload.RestoreContainer)
	if err := failed(workload.RestoreContainer, st); err != nil || rs.Status.Phase == amberv1.PhaseFailed {
		return ctrl.Result{}, err
	}
	var done *corev1.ContainerStateTerminated
	if st != nil {
		for _, s := range []corev1.ContainerState{st.State, st.LastTerminationState} {
			if t := s.Terminated; t != nil && t.ExitCode == 0 && done == nil {
				done = t
			}
		}
	}
	recorded := recordedLoad(rs)
	if done == nil && recorded == nil && st != nil && st.RestartCount > 0 && st.State.Running != nil && r.Logs != nil {
		done = r.loggedLoad(ctx, pod, st)
	}
	switch {
	case done != nil && recorded == nil:
		orig := rs.DeepCopy()
		loaded(rs, done)
		rs.Status.Progress = "data restored; waiting for the pod to be ready"
		if err := r.Client.Status().Patch(ctx, rs, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("update Restore status: %w", err)
		}
	case done == nil && recorded != nil:
		done = recorded
	}
	if done == nil {
		msg := "pod " + pod.Name + " is " + string(pod.Status.Phase) + ": waiting for it to start"
		switch {
		case st != nil && st.State.Running != nil:
			msg = "loading the logical backup into the clone's database (once it answers)"
		case st != nil && st.State.Waiting != nil:
			msg = "pod " + pod.Name + ": restore container waiting (" + st.State.Waiting.Reason + ")"
		}
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, msg)
	}
	var ready *metav1.Time
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			lt := c.LastTransitionTime
			ready = &lt
		}
	}
	if ready == nil {
		return ctrl.Result{RequeueAfter: r.poll()}, r.progress(ctx, rs, "data restored; waiting for the pod to be ready")
	}
	if ready.Before(&done.FinishedAt) {
		ready = &metav1.Time{Time: done.FinishedAt.Time}
	}
	return ctrl.Result{}, r.succeed(ctx, rs, ready, done)
}

// loggedLoad is the end of a logical restore whose container exited 0 and
// was restarted without the kubelet keeping its last state
// (kubernetes#101044): the restarted container, finding the clone marker,
// logs the report of the run that loaded the data. The earlier run ended
// when this one started (the kubelet restarts a container that exited 0
// at once) and began the report's duration before. nil if the log holds no
// report (the earlier run failed and this one restores again).
func (r *RestoreReconciler) loggedLoad(ctx context.Context, pod *corev1.Pod, st *corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	out, err := r.Logs(ctx, pod.Namespace, pod.Name, workload.RestoreContainer)
	if err != nil {
		r.log().Warn("read the restore container's log", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		return nil
	}
	var report string
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), workload.CloneReportPrefix); ok {
			report = rest
		}
	}
	var rep restoreReport
	if report == "" || json.Unmarshal([]byte(report), &rep) != nil {
		return nil
	}
	end := st.State.Running.StartedAt.Time
	start := end.Add(-time.Duration(rep.Duration * float64(time.Second)))
	return &corev1.ContainerStateTerminated{ExitCode: 0, Message: report,
		StartedAt: metav1.Time{Time: start}, FinishedAt: metav1.Time{Time: end}}
}

func pointReached(rs *amberv1.Restore, rep *restoreReport) *amberv1.RecoveryPoint {
	p := &amberv1.RecoveryPoint{Description: rep.Target}
	at := func(t time.Time) *metav1.Time {
		if t.IsZero() {
			return nil
		}
		return &metav1.Time{Time: t}
	}
	switch {
	case rs.Spec.PointInTime != nil:
		p.Time = rs.Spec.PointInTime
	case rs.Spec.Position != "":
		p.Position = rs.Spec.Position
	case rs.Spec.BackupID != "":
		p.Time, p.Position = at(rep.ConsistentTime), rep.Position
	case rep.LogReaches == "":
		// A logical restore without a target: the backup as dumped.
		p.Time, p.Position = at(rep.ConsistentTime), rep.Position
	default:
		p.Time, p.Position = at(rep.LogReachesTime), rep.LogReaches
	}
	return p
}

func nonNegative(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *RestoreReconciler) progress(ctx context.Context, rs *amberv1.Restore, msg string) error {
	if rs.Status.Progress == msg {
		return nil
	}
	orig := rs.DeepCopy()
	rs.Status.Progress = msg
	return r.Client.Status().Patch(ctx, rs, client.MergeFrom(orig))
}

// fail marks rs Failed with reason and message, and records a Warning.
func (r *RestoreReconciler) fail(ctx context.Context, rs *amberv1.Restore, reason, msg string) error {
	orig := rs.DeepCopy()
	rs.Status.Phase = amberv1.PhaseFailed
	rs.Status.Error = msg
	rs.Status.Progress = ""
	setCondition(nil, rs, &rs.Status.Conditions, metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg}, r.Clock)
	if err := r.Client.Status().Patch(ctx, rs, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("update Restore status: %w", err)
	}
	r.Recorder.Event(rs, corev1.EventTypeWarning, reason, msg)
	r.log().Warn("restore failed", "namespace", rs.Namespace, "restore", rs.Name, "reason", reason, "problem", msg)
	return nil
}
