package kubectl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spf13/cobra"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// restoreDoc is a Restore as --json prints it: its name, spec and status
// as the API holds them.
type restoreDoc struct {
	Namespace string                `json:"namespace"`
	Name      string                `json:"name"`
	Created   time.Time             `json:"created"`
	Spec      amberv1.RestoreSpec   `json:"spec"`
	Status    amberv1.RestoreStatus `json:"status"`
}

func toRestoreDoc(r *amberv1.Restore) restoreDoc {
	return restoreDoc{Namespace: r.Namespace, Name: r.Name, Created: r.CreationTimestamp.Time, Spec: r.Spec, Status: r.Status}
}

// restoreFlags are what the command line asks for.
type restoreFlags struct {
	name, sts, sourceNS   string
	toTime, toPos, backup string
	repoURL, credSecret   string
	engine                string
	wait                  bool
	timeout               time.Duration
}

// repoURLRE is the CRD's pattern for a repository URL.
var repoURLRE = regexp.MustCompile(`^(file|s3|b2)://\S+$`)

// labelRestore marks a clone's objects with its Restore
// (workload.LabelRestore).
const labelRestore = "amber.dev/restore"

// maxCloneName is the CRD's limit on spec.cloneName (the pod's name and
// its StatefulSet's controller-revision label must fit).
const maxCloneName = 52

// check validates the flags before anything is read or created, and
// returns the point in time asked for (nil without --to-time).
func (f *restoreFlags) check(prog string) (*metav1.Time, error) {
	if f.name == "" {
		return nil, usagef("--name is missing: name the clone StatefulSet (and the Restore), e.g. `%s restore pg --name pg-yesterday`", prog)
	}
	if len(f.name) > maxCloneName {
		return nil, usagef("--name %q is %d characters long; the clone's name must have at most %d", f.name, len(f.name), maxCloneName)
	}
	if errs := validation.IsDNS1123Label(f.name); len(errs) > 0 {
		return nil, usagef("--name %q is not a valid StatefulSet name: %s", f.name, strings.Join(errs, "; "))
	}
	if f.toTime != "" && f.toPos != "" {
		return nil, usagef("--to-time and --to-position cannot be combined: give one target (a time or a log position, with or without --backup), or none for the latest point the archive reaches")
	}
	if f.repoURL != "" || f.credSecret != "" {
		switch {
		case f.repoURL == "" || f.credSecret == "" || f.engine == "":
			return nil, usagef("a Restore from a repository alone needs --repository, --credentials-secret and --engine together")
		case !repoURLRE.MatchString(f.repoURL):
			return nil, usagef("--repository %q is not a repository URL: file:///path, s3://bucket/prefix or b2://bucket/prefix", f.repoURL)
		case f.sts != "":
			return nil, usagef("with --repository the argument is the StatefulSet that was backed up; drop --statefulset")
		}
		if errs := validation.IsDNS1123Subdomain(f.credSecret); len(errs) > 0 {
			return nil, usagef("--credentials-secret %q is not a Secret name: %s", f.credSecret, strings.Join(errs, "; "))
		}
	} else if f.engine != "" {
		return nil, usagef("--engine goes with --repository (with a BackupPolicy the engine is the policy's)")
	}
	switch amberv1.Engine(f.engine) {
	case "", amberv1.EnginePostgres, amberv1.EngineMySQL, amberv1.EngineMongoDB:
	default:
		return nil, usagef("--engine %q: want postgres, mysql or mongodb", f.engine)
	}
	if f.timeout != 0 && !f.wait {
		return nil, usagef("--timeout bounds --wait; add --wait")
	}
	if f.timeout < 0 {
		return nil, usagef("--timeout must not be negative")
	}
	if f.sourceNS != "" {
		if errs := validation.IsDNS1123Label(f.sourceNS); len(errs) > 0 {
			return nil, usagef("--source-namespace %q is not a namespace name: %s", f.sourceNS, strings.Join(errs, "; "))
		}
	}
	if f.toTime == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, f.toTime)
	if err != nil {
		return nil, usagef("--to-time %q is not an RFC 3339 time: write it like 2026-11-27T18:00:00Z or 2026-11-27T19:00:00+01:00", f.toTime)
	}
	if t.Nanosecond() != 0 {
		// A Kubernetes timestamp has whole seconds: the rest would be
		// dropped without a word.
		return nil, usagef("--to-time %q has a fraction of a second; a Restore's pointInTime has whole seconds: give %s, or --to-position for a finer target",
			f.toTime, t.Truncate(time.Second).Format(time.RFC3339))
	}
	return &metav1.Time{Time: t.UTC()}, nil
}

func (g *globals) restoreCommand() *cobra.Command {
	var f restoreFlags
	p := g.prog
	cmd := &cobra.Command{
		Use:   "restore POLICY|STATEFULSET --name CLONE",
		Short: "Restore a database into a clone StatefulSet: create a Restore",
		Long: `Create a Restore object and print what it asks for. amber-controller builds
a clone StatefulSet named --name next to the original, from the workload
captured with the backups (new PVCs, its own Services, no sidecar), and an
init container restores the data into it before the database starts
(PostgreSQL physical backups), or a container beside the database loads the
logical backup once the server answers (MySQL/MariaDB, MongoDB). The original
is never touched, and may be gone: the clone is made from the repository.

The argument names the BackupPolicy whose repository holds the backups, or
the StatefulSet that was backed up:
- a BackupPolicy: the StatefulSet is --statefulset, or the only one the
  policy archives or has backed up;
- a StatefulSet: its policy is the amber.dev/policy annotation of its pod
  template, or (after it was deleted) the policy of its Backups.
With --repository URL --credentials-secret SECRET --engine ENGINE no
BackupPolicy is needed (a new cluster with only the bucket and the
password): the argument is the StatefulSet that was backed up, found by the
workload captured in the repository (see ` + "`" + p + ` ls --repo` + "`" + `).

The target is one of
  --backup ID          that backup, at its consistent point (the id, or
                       the 12-digit prefix that ` + "`" + p + ` ls` + "`" + ` shows)
  --to-time TIME       the state at TIME (RFC 3339, whole seconds; needs
                       archived log)
  --to-position POS    up to log position POS (PostgreSQL: an LSN)
or none of them: the latest point the archived log reaches. PostgreSQL
takes --backup together with --to-time or --to-position: recover from that
backup (a snapshot backup's VolumeSnapshots, for one) to that target.

The Restore and the clone StatefulSet are both named --name (at most 52
characters). --source-namespace restores a StatefulSet of another namespace
(one deleted, say) into this one; the BackupPolicy must exist in this one.

With --wait, the command follows the Restore until the clone's database is
Ready or the restore Failed (progress lines on a terminal), then prints the
point reached and the RTO, or exits non-zero with the controller's reason.
--timeout bounds the wait, not the restore. --json prints the Restore as one
JSON document (after the wait, with --wait).

The clone outlives the Restore; remove it with
  kubectl delete sts,svc,pvc -l amber.dev/restore=CLONE`,
		Example: `  # the latest point the archive reaches, into a clone pg-now
  ` + p + ` restore pg --name pg-now
  # the state of 18:00 UTC, and wait until the clone's database is ready
  ` + p + ` restore pg --name pg-yesterday --to-time 2026-11-27T18:00:00Z --wait
  # one backup, found with ` + "`" + p + ` ls` + "`" + `, of StatefulSet orders-db of policy nightly
  ` + p + ` restore nightly --statefulset orders-db --name orders-copy --backup 3f9a1c0d2e4b
  # up to a log position, in namespace prod, as JSON for scripts
  ` + p + ` restore pg -n prod --name pg-lsn --to-position 0/3000060 --wait --json | jq .status.pointReached
  # a StatefulSet whose namespace was deleted, into namespace rescue
  ` + p + ` restore nightly -n rescue --source-namespace shop --statefulset pg --name pg --wait
  # a new cluster with only the bucket and a Secret holding its password and keys
  ` + p + ` restore pg -n rescue --source-namespace shop --repository s3://backups/prod \
      --credentials-secret repo-creds --engine postgres --name pg --wait`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("%s takes the name of one BackupPolicy or StatefulSet, got %q (e.g. `%s restore pg --name pg-copy`)", cmd.CommandPath(), args, p)
			}
			_, err := f.check(p)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			at, err := f.check(p)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := g.connect()
			if err != nil {
				return err
			}
			policy, sts := "", args[0]
			if f.repoURL == "" {
				if policy, sts, err = c.resolveSource(ctx, args[0], f.sts, f.sourceNS); err != nil {
					return err
				}
			}
			if err := c.checkCloneName(ctx, f.name); err != nil {
				return err
			}
			rs := &amberv1.Restore{
				ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: f.name},
				Spec: amberv1.RestoreSpec{
					SourceStatefulSet: sts,
					SourceNamespace:   f.sourceNS,
					BackupID:          f.backup,
					PointInTime:       at,
					Position:          f.toPos,
					CloneName:         f.name,
				},
			}
			if policy != "" {
				rs.Spec.PolicyRef = &amberv1.LocalRef{Name: policy}
				if len(validation.IsValidLabelValue(policy)) == 0 {
					rs.Labels = map[string]string{labelPolicy: policy}
				}
			} else {
				rs.Spec.Repository = &amberv1.RepositorySpec{URL: f.repoURL, CredentialsSecret: amberv1.SecretRef{Name: f.credSecret}}
				rs.Spec.Engine = amberv1.Engine(f.engine)
			}
			var created amberv1.Restore
			if err := c.create(ctx, resRestores, rs, &created); err != nil {
				return fmt.Errorf("create Restore %s: %w", f.name, err)
			}
			jsonOut := boolFlag(cmd, "json")
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if !jsonOut {
				fmt.Fprintln(stdout, describeRequest(&created))
			}
			if !f.wait {
				if jsonOut {
					return printJSON(stdout, toRestoreDoc(&created))
				}
				fmt.Fprintf(stdout, "follow it with `kubectl get restore %s -n %s -w`, or run this again with --wait\n", created.Name, created.Namespace)
				return nil
			}
			progress := !jsonOut && !boolFlag(cmd, "quiet") && isTerminal(stderr)
			final, werr := g.waitRestore(ctx, c, &created, f.timeout, stderr, progress)
			if jsonOut {
				if err := printJSON(stdout, toRestoreDoc(final)); err != nil {
					return err
				}
			}
			if werr != nil {
				return werr
			}
			if final.Status.Phase == amberv1.PhaseFailed {
				return fmt.Errorf("restore %s failed: %s", final.Name, restoreFailure(final))
			}
			if !jsonOut {
				fmt.Fprintln(stdout, restoreOutcome(final))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "name of the clone StatefulSet and of the Restore (required; at most 52 characters)")
	fl.StringVar(&f.sts, "statefulset", "", "StatefulSet that was backed up, when the argument is a BackupPolicy (default: the only one it archives or backed up)")
	fl.StringVar(&f.sourceNS, "source-namespace", "", "namespace the backups were taken in (default: the Restore's namespace)")
	fl.StringVar(&f.toTime, "to-time", "", "restore the state at this RFC 3339 time, whole seconds (e.g. 2026-11-27T18:00:00Z)")
	fl.StringVar(&f.toPos, "to-position", "", "restore up to this log position (PostgreSQL: an LSN such as 0/3000060)")
	fl.StringVar(&f.backup, "backup", "", "restore this backup (its id, or the 12-digit prefix `ls` shows)")
	fl.StringVar(&f.repoURL, "repository", "", "restore from this repository alone, with no BackupPolicy (a new cluster that has only the bucket): the argument is then the StatefulSet that was backed up; needs --credentials-secret and --engine")
	fl.StringVar(&f.credSecret, "credentials-secret", "", "with --repository: the Secret of this namespace holding the repository password (key password) and storage keys")
	fl.StringVar(&f.engine, "engine", "", "with --repository: the database engine (postgres, mysql, mongodb)")
	fl.BoolVar(&f.wait, "wait", false, "wait until the clone's database is Ready or the restore Failed; exit non-zero when it failed")
	fl.DurationVar(&f.timeout, "timeout", 0, "give up waiting after this long, e.g. 30m (default: no limit; the restore goes on)")
	return cmd
}

// resolveSource finds the BackupPolicy and the StatefulSet that arg (a
// BackupPolicy or a StatefulSet of the namespace) and --statefulset name.
func (c *conn) resolveSource(ctx context.Context, arg, sts, sourceNS string) (policy, statefulSet string, err error) {
	srcNS := sourceNS
	if srcNS == "" {
		srcNS = c.ns
	}
	var pol amberv1.BackupPolicy
	err = c.rc.Get().Namespace(c.ns).Resource(resPolicies).Name(arg).Do(ctx).Into(&pol)
	if err == nil {
		if sts != "" {
			return pol.Name, sts, nil
		}
		cands, err := c.statefulSetsOf(ctx, &pol, srcNS)
		if err != nil {
			return "", "", err
		}
		switch len(cands) {
		case 1:
			return pol.Name, cands[0], nil
		case 0:
			return "", "", usagef("BackupPolicy %s archives no StatefulSet and has no Backups naming one: give the StatefulSet with --statefulset", pol.Name)
		}
		return "", "", usagef("BackupPolicy %s covers several StatefulSets (%s): choose one with --statefulset", pol.Name, strings.Join(cands, ", "))
	}
	if !apierrors.IsNotFound(err) {
		return "", "", c.explain(ctx, err, "get", resPolicies, arg, false)
	}
	if served, known := c.serves(ctx, resPolicies); known && !served {
		return "", "", c.explain(ctx, err, "get", resPolicies, arg, false)
	}
	// arg is not a policy: a StatefulSet.
	if sts != "" {
		return "", "", usagef("%q is no BackupPolicy in namespace %s; --statefulset goes with a BackupPolicy (list them with `%s status`)", arg, c.ns, c.prog)
	}
	policy, err = c.policyOfStatefulSet(ctx, srcNS, arg)
	if err != nil {
		return "", "", err
	}
	if policy == "" {
		return "", "", fmt.Errorf("%q is neither a BackupPolicy of namespace %s nor a StatefulSet of namespace %s with one (no amber.dev/policy annotation, no Backups): "+
			"give the policy and the StatefulSet, e.g. `%s restore POLICY --statefulset %s --name ...`", arg, c.ns, srcNS, c.prog, arg)
	}
	if srcNS != c.ns {
		// The Restore refers to a policy of its own namespace.
		if err := c.get(ctx, resPolicies, policy, &pol); err != nil {
			return "", "", err
		}
	}
	return policy, arg, nil
}

// statefulSetsOf lists the StatefulSets of namespace ns that policy p
// archives or has Backups of.
func (c *conn) statefulSetsOf(ctx context.Context, p *amberv1.BackupPolicy, ns string) ([]string, error) {
	set := map[string]bool{}
	if ns == p.Namespace {
		for _, a := range p.Status.Archivers {
			set[a.StatefulSet] = true
		}
	}
	var list amberv1.BackupList
	if err := c.listIn(ctx, resBackups, ns, &list); err != nil {
		return nil, err
	}
	for _, b := range list.Items {
		if b.Spec.PolicyRef.Name != p.Name {
			continue
		}
		if s := b.Status.StatefulSet; s != "" {
			set[s] = true
		} else if s := b.Spec.StatefulSet; s != "" {
			set[s] = true
		}
	}
	delete(set, "")
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// policyOfStatefulSet returns the policy of StatefulSet ns/name: its pod
// template's amber.dev/policy, else the policy of its Backups; "" when
// neither says.
func (c *conn) policyOfStatefulSet(ctx context.Context, ns, name string) (string, error) {
	// The light scheme has no apps/v1: read the one field needed.
	raw, err := c.rc.Get().AbsPath("/apis/apps/v1/namespaces", ns, "statefulsets", name).Do(ctx).Raw()
	if err == nil {
		var sts struct {
			Spec struct {
				Template struct {
					Metadata struct {
						Annotations map[string]string `json:"annotations"`
					} `json:"metadata"`
				} `json:"template"`
			} `json:"spec"`
		}
		if json.Unmarshal(raw, &sts) == nil {
			if p := sts.Spec.Template.Metadata.Annotations[labelPolicy]; p != "" {
				return p, nil
			}
		}
	}
	// Gone, not readable (RBAC) or not annotated: its Backups say.
	var list amberv1.BackupList
	if err := c.listIn(ctx, resBackups, ns, &list); err != nil {
		return "", err
	}
	found := map[string]bool{}
	for _, b := range list.Items {
		if b.Status.StatefulSet == name || b.Spec.StatefulSet == name || b.Labels[labelStatefulSet] == name {
			found[b.Spec.PolicyRef.Name] = true
		}
	}
	if len(found) > 1 {
		var ps []string
		for p := range found {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		return "", usagef("StatefulSet %s was backed up by several BackupPolicies (%s): give the policy, e.g. `%s restore %s --statefulset %s --name ...`",
			name, strings.Join(ps, ", "), c.prog, ps[0], name)
	}
	for p := range found {
		return p, nil
	}
	return "", nil
}

// checkCloneName refuses a clone name that a StatefulSet of the namespace
// has which is not a clone of a Restore of that name (the controller would
// fail with CloneExists). What cannot be read is left to the controller.
func (c *conn) checkCloneName(ctx context.Context, name string) error {
	raw, err := c.rc.Get().AbsPath("/apis/apps/v1/namespaces", c.ns, "statefulsets", name).Do(ctx).Raw()
	if err != nil {
		return nil
	}
	var sts struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if json.Unmarshal(raw, &sts) != nil || sts.Metadata.Labels[labelRestore] == name {
		return nil
	}
	return fmt.Errorf("StatefulSet %s exists in namespace %s and is no clone of a Restore named %s: choose another --name", name, c.ns, name)
}

// listIn lists resource in namespace ns.
func (c *conn) listIn(ctx context.Context, resource, ns string, into runtime.Object) error {
	err := c.rc.Get().Namespace(ns).Resource(resource).Do(ctx).Into(into)
	return c.explain(ctx, err, "list", resource, "", false)
}

// target describes what rs restores to.
func target(rs *amberv1.Restore) string {
	from := ""
	if rs.Spec.BackupID != "" {
		from = " from backup " + rs.Spec.BackupID
	}
	switch {
	case rs.Spec.PointInTime != nil:
		return "time " + rs.Spec.PointInTime.UTC().Format(time.RFC3339) + from
	case rs.Spec.Position != "":
		return "position " + rs.Spec.Position + from
	case rs.Spec.BackupID != "":
		return "backup " + rs.Spec.BackupID
	}
	return "the latest point the archived log reaches"
}

// describeRequest is the line printed for a created Restore.
func describeRequest(rs *amberv1.Restore) string {
	src := rs.Spec.SourceStatefulSet
	if rs.Spec.SourceNamespace != "" && rs.Spec.SourceNamespace != rs.Namespace {
		src = rs.Spec.SourceNamespace + "/" + src
	}
	policy := ""
	if rs.Spec.PolicyRef != nil {
		policy = " of BackupPolicy " + rs.Spec.PolicyRef.Name
	} else if r := rs.Spec.Repository; r != nil {
		policy = fmt.Sprintf(" (%s) from repository %s", rs.Spec.Engine, r.URL)
	}
	return fmt.Sprintf("Restore %s/%s created: StatefulSet %s%s into clone StatefulSet %s, to %s",
		rs.Namespace, rs.Name, src, policy, orDash(rs.Spec.CloneName), target(rs))
}

// restoreReady reports whether the clone's database is ready.
func restoreReady(rs *amberv1.Restore) bool {
	return rs.Status.Phase == amberv1.PhaseSucceeded || meta.IsStatusConditionTrue(rs.Status.Conditions, condReady)
}

func restoreFinished(rs *amberv1.Restore) bool {
	return restoreReady(rs) || rs.Status.Phase == amberv1.PhaseFailed
}

// restoreFailure is why rs failed, with the condition's reason.
func restoreFailure(rs *amberv1.Restore) string {
	msg, reason := rs.Status.Error, ""
	if c := meta.FindStatusCondition(rs.Status.Conditions, condReady); c != nil {
		reason = c.Reason
		if msg == "" {
			msg = c.Message
		}
	}
	if msg == "" {
		msg = "the controller recorded no reason (see `kubectl describe restore " + rs.Name + " -n " + rs.Namespace + "`)"
	}
	if reason != "" {
		return reason + ": " + msg
	}
	return msg
}

// restoreOutcome summarises a Restore whose clone is ready.
func restoreOutcome(rs *amberv1.Restore) string {
	st := rs.Status
	s := fmt.Sprintf("restore %s ready: StatefulSet %s", rs.Name, orDash(st.CloneName))
	if pt := st.PointReached; pt != nil {
		var at []string
		if pt.Time != nil {
			at = append(at, "time "+pt.Time.UTC().Format(time.RFC3339))
		}
		if pt.Position != "" {
			at = append(at, "position "+pt.Position)
		}
		if len(at) > 0 {
			s += " reached " + strings.Join(at, ", ")
		}
	}
	if st.BackupID != "" {
		s += " from backup " + shortID(st.BackupID)
	}
	if st.RTO != nil {
		s += "; RTO " + st.RTO.Duration.String()
		if tm := st.Timings; tm != nil {
			var parts []string
			for _, p := range []struct {
				name string
				d    *metav1.Duration
			}{{"scheduling", tm.Scheduling}, {"data transfer", tm.DataTransfer}, {"recovery", tm.Recovery}} {
				if p.d != nil {
					parts = append(parts, p.name+" "+p.d.Duration.String())
				}
			}
			if len(parts) > 0 {
				s += " (" + strings.Join(parts, ", ") + ")"
			}
		}
	}
	return s
}

// restoreState is the phase and progress of rs as a progress line says them.
func restoreState(rs *amberv1.Restore) string {
	ph := rs.Status.Phase
	if ph == "" {
		ph = amberv1.PhasePending
	}
	if rs.Status.Progress != "" {
		return string(ph) + ": " + rs.Status.Progress
	}
	return string(ph)
}

// waitRestore follows rs until its clone is ready, it failed, the timeout
// has passed or ctx ends, and returns its last state. With progress it
// writes a line to w each time the controller's progress changes.
func (g *globals) waitRestore(ctx context.Context, c *conn, rs *amberv1.Restore, timeout time.Duration, w io.Writer, progress bool) (*amberv1.Restore, error) {
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	last, shown := rs, ""
	seen := func(r *amberv1.Restore) {
		last = r
		if !progress {
			return
		}
		if s := restoreState(r); s != shown {
			shown = s
			fmt.Fprintf(w, "%6s  %s\n", time.Since(start).Round(time.Second), s)
		}
	}
	final, err := follow(ctx, c, resRestores, rs.Name, restoreFinished, seen, "Restore "+rs.Name+" was deleted before its clone was ready")
	if err == nil {
		return final, nil
	}
	switch {
	case parent.Err() != nil:
		return last, fmt.Errorf("stopped waiting for restore %s (%s); it goes on: see it with `kubectl get restore %s -n %s`", rs.Name, restoreState(last), rs.Name, c.ns)
	case ctx.Err() != nil:
		return last, fmt.Errorf("restore %s is still %s after %s; it goes on: see it with `kubectl get restore %s -n %s`", rs.Name, restoreState(last), timeout, rs.Name, c.ns)
	}
	return last, err
}
