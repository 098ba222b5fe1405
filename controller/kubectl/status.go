package kubectl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	humanduration "k8s.io/apimachinery/pkg/util/duration"

	"github.com/spf13/cobra"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// Condition types of a BackupPolicy's status (controllers.CondReady,
// CondArchiving).
const (
	condReady     = "Ready"
	condArchiving = "Archiving"
)

// policyDoc is a BackupPolicy as --json prints it: its spec and status as
// the API holds them, and its newest Backup.
type policyDoc struct {
	Namespace    string                     `json:"namespace"`
	Name         string                     `json:"name"`
	Generation   int64                      `json:"generation"`
	Spec         amberv1.BackupPolicySpec   `json:"spec"`
	Status       amberv1.BackupPolicyStatus `json:"status"`
	LatestBackup *backupDoc                 `json:"latestBackup,omitempty"`
}

func (g *globals) statusCommand() *cobra.Command {
	var all bool
	p := g.prog
	cmd := &cobra.Command{
		Use:   "status [POLICY]",
		Short: "Show what the controller reports for each BackupPolicy",
		Long: `Show each BackupPolicy of a namespace (-A: of every namespace), or only
POLICY, as amber-controller reports it: whether the policy is Ready, whether
log archiving runs and which pod archives for each StatefulSet, the last good
backup and its age, the next scheduled run, and the newest Backup (with its
error when it failed). --json prints each policy's spec and status as the
API holds them, with its newest Backup.

For each archiving StatefulSet it shows the recoverable window (the span a
point-in-time restore can reach) and any gap in it, as the archiver last
computed it (every minute); ` + "`amber ls`" + ` against the policy's repository
reads it from the repository itself.`,
		Example: `  ` + p + ` status
  ` + p + ` status pg -n prod
  ` + p + ` status -A --json | jq '.policies[] | {name, last: .status.lastSuccessfulTime}'`,
		Args: maxArgs(1, "one BackupPolicy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && g.namespace != "" {
				return usagef("-A shows every namespace; leave out --namespace")
			}
			ctx := cmd.Context()
			c, err := g.connect()
			if err != nil {
				return err
			}
			var policies []amberv1.BackupPolicy
			if len(args) == 1 && !all {
				var pol amberv1.BackupPolicy
				if err := c.get(ctx, resPolicies, args[0], &pol); err != nil {
					return err
				}
				policies = append(policies, pol)
			} else {
				var list amberv1.BackupPolicyList
				if err := c.list(ctx, resPolicies, all, &list); err != nil {
					return err
				}
				for _, pol := range list.Items {
					if len(args) == 0 || pol.Name == args[0] {
						policies = append(policies, pol)
					}
				}
				if len(args) == 1 && len(policies) == 0 {
					return fmt.Errorf("BackupPolicy %q not found in any namespace (list the policies with `%s status -A`)", args[0], g.prog)
				}
			}
			sort.Slice(policies, func(i, j int) bool {
				if policies[i].Namespace != policies[j].Namespace {
					return policies[i].Namespace < policies[j].Namespace
				}
				return policies[i].Name < policies[j].Name
			})
			latest, err := c.latestBackups(ctx, all)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if boolFlag(cmd, "json") {
				docs := make([]policyDoc, 0, len(policies))
				for _, pol := range policies {
					d := policyDoc{Namespace: pol.Namespace, Name: pol.Name, Generation: pol.Generation, Spec: pol.Spec, Status: pol.Status}
					if b := latest[pol.Namespace+"/"+pol.Name]; b != nil {
						doc := toDoc(b)
						d.LatestBackup = &doc
					}
					docs = append(docs, d)
				}
				return printJSON(out, map[string]any{"policies": docs})
			}
			if len(policies) == 0 {
				where := "in namespace " + c.ns
				if all {
					where = "in any namespace"
				}
				_, err := fmt.Fprintf(cmd.ErrOrStderr(), "no BackupPolicies %s\n", where)
				return err
			}
			now := g.clk.Now()
			for i := range policies {
				if i > 0 {
					fmt.Fprintln(out)
				}
				pol := &policies[i]
				if err := printPolicy(out, g.prog, pol, latest[pol.Namespace+"/"+pol.Name], now); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "show the BackupPolicies of every namespace")
	return cmd
}

// latestBackups returns the newest Backup of each policy, by
// "namespace/policy".
func (c *conn) latestBackups(ctx context.Context, all bool) (map[string]*amberv1.Backup, error) {
	list, err := c.backups(ctx, all, "")
	if err != nil {
		return nil, err
	}
	latest := map[string]*amberv1.Backup{}
	for i := range list { // oldest first: the last one wins
		latest[list[i].Namespace+"/"+list[i].Spec.PolicyRef.Name] = &list[i]
	}
	return latest, nil
}

func printPolicy(w io.Writer, prog string, p *amberv1.BackupPolicy, latest *amberv1.Backup, now time.Time) error {
	mode := p.Spec.Mode
	if mode == "" {
		mode = amberv1.ModePhysical
	}
	fmt.Fprintf(w, "BackupPolicy %s/%s (%s, %s)\n", p.Namespace, p.Name, p.Spec.Engine, mode)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	// row writes one line; an empty key continues the line above.
	row := func(k, format string, args ...any) {
		if k != "" {
			k += ":"
		}
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}

	if len(p.Status.Conditions) == 0 && p.Status.ObservedGeneration == 0 {
		row("Ready", "unknown: the controller has not reported on this policy (is amber-controller running?)")
	} else {
		row("Ready", "%s", condition(p.Status.Conditions, condReady))
	}
	if p.Status.ObservedGeneration != 0 && p.Status.ObservedGeneration < p.Generation {
		row("Note", "the status describes generation %d of the policy, which is at %d: the controller has not caught up",
			p.Status.ObservedGeneration, p.Generation)
	}
	if !p.Spec.Archive {
		row("Archiving", "off (spec.archive is false)")
	} else {
		row("Archiving", "%s", condition(p.Status.Conditions, condArchiving))
		if len(p.Status.Archivers) == 0 {
			row("Archivers", "none")
		}
		for i, a := range p.Status.Archivers {
			k := ""
			if i == 0 {
				k = "Archivers"
			}
			row(k, "StatefulSet %s: pod %s, since %s (%s)", a.StatefulSet, a.Pod, stamp(a.Since.Time), ago(a.Since.Time, now))
			if a.RecoverableTo != nil {
				from := "the window's start is not known yet"
				if a.RecoverableFrom != nil {
					from = stamp(a.RecoverableFrom.Time)
				}
				row("", "  recoverable from %s to %s (%s)", from, stamp(a.RecoverableTo.Time), ago(a.RecoverableTo.Time, now))
				for _, g := range a.Gaps {
					row("", "  GAP: %s", g)
				}
			}
		}
	}
	if t := p.Status.LastSuccessfulTime; t != nil {
		row("Last good", "%s, finished %s (%s)", orDash(p.Status.LastSuccessfulBackup), stamp(t.Time), ago(t.Time, now))
	} else {
		row("Last good", "none yet")
	}
	switch {
	case p.Spec.Schedule == "":
		row("Next run", "none: no schedule (back up with `%s backup %s -n %s`)", prog, p.Name, p.Namespace)
	case p.Spec.Suspend:
		row("Next run", "none: the schedule %q is suspended", p.Spec.Schedule)
	case p.Status.NextScheduleTime != nil:
		row("Next run", "%s (%s; schedule %q)", stamp(p.Status.NextScheduleTime.Time), until(p.Status.NextScheduleTime.Time, now), p.Spec.Schedule)
	default:
		row("Next run", "not reported yet (schedule %q)", p.Spec.Schedule)
	}
	if latest != nil {
		s := fmt.Sprintf("%s: %s", latest.Name, phase(latest))
		if t := when(latest); !t.IsZero() {
			s += fmt.Sprintf(", started %s (%s)", stamp(t), ago(t, now))
		}
		if latest.Status.Phase == amberv1.PhaseFailed {
			s += ": " + failure(latest)
		}
		row("Latest", "%s", s)
	}
	return tw.Flush()
}

// condition shows condition typ of conds: status, reason and message.
func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return "unknown (not reported)"
	}
	s := string(c.Status)
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	if m := strings.TrimSpace(c.Message); m != "" {
		s += ": " + m
	}
	return s
}

func stamp(t time.Time) string { return t.Local().Format(time.DateTime) }

// ago says how long before now t was.
func ago(t, now time.Time) string {
	if d := now.Sub(t); d >= 0 {
		return humanduration.HumanDuration(d) + " ago"
	}
	return "in the future by " + humanduration.HumanDuration(t.Sub(now))
}

// until says how long after now t is.
func until(t, now time.Time) string {
	if d := t.Sub(now); d >= 0 {
		return "in " + humanduration.HumanDuration(d)
	}
	return "overdue by " + humanduration.HumanDuration(now.Sub(t))
}
