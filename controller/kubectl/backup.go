package kubectl

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spf13/cobra"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// Labels the controller puts on the Backups a schedule creates
// (controllers.LabelPolicy, LabelStatefulSet, LabelScheduled); a Backup
// made here carries the first two as well.
const (
	labelPolicy      = "amber.dev/policy"
	labelStatefulSet = "amber.dev/statefulset"
	labelScheduled   = "amber.dev/scheduled"
	// condScheduled is controllers.CondScheduled: False while the Backup
	// waits for a replica to qualify, saying why.
	condScheduled = "Scheduled"
)

// backupDoc is a Backup as --json prints it: its name, spec and status as
// the API holds them.
type backupDoc struct {
	Namespace string               `json:"namespace"`
	Name      string               `json:"name"`
	Created   time.Time            `json:"created"`
	Scheduled bool                 `json:"scheduled"`
	Spec      amberv1.BackupSpec   `json:"spec"`
	Status    amberv1.BackupStatus `json:"status"`
}

func toDoc(b *amberv1.Backup) backupDoc {
	return backupDoc{Namespace: b.Namespace, Name: b.Name, Created: b.CreationTimestamp.Time,
		Scheduled: b.Labels[labelScheduled] == "true", Spec: b.Spec, Status: b.Status}
}

func finished(b *amberv1.Backup) bool {
	return b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed
}

func (g *globals) backupCommand() *cobra.Command {
	var (
		sts     string
		wait    bool
		timeout time.Duration
	)
	p := g.prog
	cmd := &cobra.Command{
		Use:   "backup POLICY",
		Short: "Back up now: create a Backup for a BackupPolicy",
		Long: `Create a Backup object for the BackupPolicy POLICY and print its name.
amber-controller picks the pod (as the policy's replica preference says), has
its sidecar back the database up into the policy's repository, and records
the result in the Backup's status.

--statefulset names the StatefulSet to back up. It may be left out when the
pods of exactly one StatefulSet carry the policy (amber.dev/policy: POLICY).

With --wait, the command follows the Backup until it has Succeeded or Failed
(a progress line on a terminal) and exits non-zero with the controller's
error when it failed. --timeout bounds the wait, not the backup: a backup
still running then goes on. --json prints the Backup, with its status as
the API holds it, as one JSON document (after the wait, with --wait).`,
		Example: `  ` + p + ` backup pg            # prints the new Backup's name
  ` + p + ` backup pg --wait     # and waits until it has Succeeded or Failed
  ` + p + ` backup pg --statefulset orders-db --wait --timeout 30m
  ` + p + ` backup pg -n prod --wait --json | jq -r .status.backupID`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("%s takes the name of one BackupPolicy, got %q", cmd.CommandPath(), args)
			}
			if timeout != 0 && !wait {
				return usagef("--timeout bounds --wait; add --wait")
			}
			if timeout < 0 {
				return usagef("--timeout must not be negative")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.connect()
			if err != nil {
				return err
			}
			jsonOut := boolFlag(cmd, "json")
			// Check the policy here: a Backup of a policy that does not
			// exist would only fail later, in the controller.
			var pol amberv1.BackupPolicy
			if err := c.get(ctx, resPolicies, args[0], &pol); err != nil {
				return err
			}
			b := &amberv1.Backup{
				ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, GenerateName: pol.Name + "-manual-", Labels: map[string]string{}},
				Spec:       amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: pol.Name}, StatefulSet: sts},
			}
			if len(validation.IsValidLabelValue(pol.Name)) == 0 {
				b.Labels[labelPolicy] = pol.Name
			}
			if sts != "" && len(validation.IsValidLabelValue(sts)) == 0 {
				b.Labels[labelStatefulSet] = sts
			}
			var created amberv1.Backup
			if err := c.create(ctx, resBackups, b, &created); err != nil {
				return fmt.Errorf("create a Backup of BackupPolicy %s: %w", pol.Name, err)
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if !wait {
				if jsonOut {
					return printJSON(stdout, toDoc(&created))
				}
				_, err := fmt.Fprintln(stdout, created.Name)
				return err
			}
			if !jsonOut {
				// The name first, so the user knows what is being waited for.
				fmt.Fprintln(stdout, created.Name)
			}
			quiet := boolFlag(cmd, "quiet")
			final, werr := g.wait(ctx, c, &created, timeout, stderr, !quiet && isTerminal(stderr))
			if jsonOut {
				if err := printJSON(stdout, toDoc(final)); err != nil {
					return err
				}
			}
			if werr != nil {
				return werr
			}
			if final.Status.Phase == amberv1.PhaseFailed {
				return fmt.Errorf("backup %s failed: %s", final.Name, failure(final))
			}
			if !quiet {
				fmt.Fprintf(stderr, "backup %s succeeded: %s\n", final.Name, outcome(final))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sts, "statefulset", "", "StatefulSet to back up (default: the one whose pods carry the policy)")
	f.BoolVar(&wait, "wait", false, "wait until the backup has Succeeded or Failed; exit non-zero when it failed")
	f.DurationVar(&timeout, "timeout", 0, "give up waiting after this long, e.g. 30m (default: no limit; the backup goes on)")
	return cmd
}

// wait follows Backup b until it has finished, the timeout has passed or
// ctx ends, and returns its last state. With progress it keeps a status
// line on w.
func (g *globals) wait(ctx context.Context, c *conn, b *amberv1.Backup, timeout time.Duration, w io.Writer, progress bool) (*amberv1.Backup, error) {
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var (
		mu   sync.Mutex
		last = b
	)
	seen := func(nb *amberv1.Backup) {
		mu.Lock()
		last = nb
		mu.Unlock()
	}
	if progress {
		stop := showProgress(w, func() *amberv1.Backup {
			mu.Lock()
			defer mu.Unlock()
			return last
		})
		defer stop()
	}
	final, err := follow(ctx, c, resBackups, b.Name, finished, seen, "Backup "+b.Name+" was deleted before it finished")
	if err == nil {
		return final, nil
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case parent.Err() != nil:
		return last, fmt.Errorf("stopped waiting for backup %s (%s); it goes on: see it with `%s ls -n %s`", b.Name, phase(last), g.prog, c.ns)
	case ctx.Err() != nil:
		return last, fmt.Errorf("backup %s is still %s after %s; it goes on: see it with `%s ls -n %s`", b.Name, phase(last), timeout, g.prog, c.ns)
	}
	return last, err
}

// showProgress keeps a one-line status of the Backup current returns on
// w, every half second, until the returned function is called.
func showProgress(w io.Writer, current func() *amberv1.Backup) func() {
	start := time.Now()
	stop := make(chan struct{})
	var done sync.WaitGroup
	done.Add(1)
	go func() {
		defer done.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\033[K%s", describe(current(), time.Since(start)))
			}
		}
	}()
	return func() {
		close(stop)
		done.Wait()
	}
}

// describe is the progress line for b, waited for elapsed so far.
func describe(b *amberv1.Backup, elapsed time.Duration) string {
	el := elapsed.Round(time.Second)
	switch b.Status.Phase {
	case amberv1.PhaseRunning:
		return fmt.Sprintf("%s: Running on pod %s of StatefulSet %s  %s", b.Name, orDash(b.Status.TargetPod), orDash(b.Status.StatefulSet), el)
	case "", amberv1.PhasePending:
		s := fmt.Sprintf("%s: Pending  %s", b.Name, el)
		if c := meta.FindStatusCondition(b.Status.Conditions, condScheduled); c != nil && c.Status == metav1.ConditionFalse {
			return s + "  (waiting for a replica: " + c.Message + ")"
		}
		if elapsed > 30*time.Second {
			s += "  (not picked up yet: is amber-controller running?)"
		}
		return s
	}
	return fmt.Sprintf("%s: %s  %s", b.Name, b.Status.Phase, el)
}

// phase is b's phase, Pending when the controller has not set one yet.
func phase(b *amberv1.Backup) amberv1.Phase {
	if b.Status.Phase == "" {
		return amberv1.PhasePending
	}
	return b.Status.Phase
}

// failure is why b failed.
func failure(b *amberv1.Backup) string {
	if b.Status.Error != "" {
		return b.Status.Error
	}
	for _, c := range b.Status.Conditions {
		if c.Type == "Complete" && c.Message != "" {
			return c.Message
		}
	}
	return "the controller recorded no reason (see `kubectl describe backup " + b.Name + " -n " + b.Namespace + "`)"
}

// outcome summarises a Backup that succeeded.
func outcome(b *amberv1.Backup) string {
	s := fmt.Sprintf("id %s, %s read from pod %s of StatefulSet %s", orDash(b.Status.BackupID), humanBytes(b.Status.Bytes),
		orDash(b.Status.TargetPod), orDash(b.Status.StatefulSet))
	if b.Status.BytesAdded > 0 {
		s += fmt.Sprintf(", %s added to the repository", humanBytes(b.Status.BytesAdded))
	}
	if d, ok := duration(b, time.Time{}); ok {
		s += " in " + d.String()
	}
	return s
}

// duration is how long b ran: until it finished, else until now (when
// now is set).
func duration(b *amberv1.Backup, now time.Time) (time.Duration, bool) {
	if b.Status.StartedAt == nil {
		return 0, false
	}
	end := now
	if b.Status.FinishedAt != nil {
		end = b.Status.FinishedAt.Time
	}
	if end.IsZero() || end.Before(b.Status.StartedAt.Time) {
		return 0, false
	}
	return end.Sub(b.Status.StartedAt.Time).Round(time.Second), true
}
