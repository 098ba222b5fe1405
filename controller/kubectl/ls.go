package kubectl

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

func (g *globals) lsCommand() *cobra.Command {
	var all bool
	var repoURL, passwordFile string
	p := g.prog
	cmd := &cobra.Command{
		Use:   "ls [POLICY]",
		Short: "List Backups, oldest first",
		Long: `List the Backup objects of a namespace (-A: of every namespace), or only
those of BackupPolicy POLICY, oldest first (by the time the backup started,
else the time the object was made): the pod backed up, the phase, when it
started and how long it took, the bytes stored and the backup's id in the
repository (give it to ` + "`amber restore --backup`" + `). --json prints each Backup's
spec and status as the API holds them.

With --repo URL, list instead the workloads stored in that repository with
each backup (the StatefulSet, its Services, ConfigMaps and Secrets, by kind
and name): from the bucket alone, with no cluster. The storage keys come
from the environment, the password from --password-file or AMBER_PASSWORD.`,
		Example: `  ` + p + ` ls
  ` + p + ` ls pg -n prod
  ` + p + ` ls -A --json | jq -r '.backups[] | select(.status.phase == "Failed") | .name'
  ` + p + ` ls --repo s3://backups/shop   # workloads captured in the repository`,
		Args: maxArgs(1, "one BackupPolicy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && g.namespace != "" {
				return usagef("-A lists every namespace; leave out --namespace")
			}
			ctx := cmd.Context()
			if repoURL != "" {
				if len(args) > 0 || all {
					return usagef("--repo lists the repository's workloads; leave out POLICY and -A")
				}
				return listWorkloads(ctx, g.workloads, cmd.OutOrStdout(), cmd.ErrOrStderr(), repoURL, passwordFile, boolFlag(cmd, "json"))
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			policy := ""
			if len(args) == 1 {
				policy = args[0]
			}
			list, err := c.backups(ctx, all, policy)
			if err != nil {
				return err
			}
			if len(list) == 0 && policy != "" {
				// Say so when the policy itself is missing, not just its backups.
				if err := c.policyExists(ctx, all, policy); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if boolFlag(cmd, "json") {
				docs := make([]backupDoc, 0, len(list))
				for i := range list {
					docs = append(docs, toDoc(&list[i]))
				}
				return printJSON(out, map[string]any{"backups": docs})
			}
			if len(list) == 0 {
				where := "in namespace " + c.ns
				if all {
					where = "in any namespace"
				}
				if policy != "" {
					where = "of BackupPolicy " + policy + " " + where
				}
				_, err := fmt.Fprintf(cmd.ErrOrStderr(), "no Backups %s\n", where)
				return err
			}
			now := g.clk.Now()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if all {
				fmt.Fprint(tw, "NAMESPACE\t")
			}
			fmt.Fprintln(tw, "NAME\tPOLICY\tSTATEFULSET\tPOD\tPHASE\tSTARTED\tDURATION\tBYTES\tBACKUP ID")
			for i := range list {
				b := &list[i]
				if all {
					fmt.Fprintf(tw, "%s\t", b.Namespace)
				}
				started, dur, size := "-", "-", "-"
				if b.Status.StartedAt != nil {
					started = b.Status.StartedAt.Local().Format(time.DateTime)
				}
				if d, ok := duration(b, now); ok {
					dur = d.String()
				}
				if b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Bytes > 0 {
					size = humanBytes(b.Status.Bytes)
				}
				sts := b.Status.StatefulSet
				if sts == "" {
					sts = b.Spec.StatefulSet
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Spec.PolicyRef.Name, orDash(sts),
					orDash(b.Status.TargetPod), phase(b), started, dur, size, orDash(shortID(b.Status.BackupID)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the Backups of every namespace")
	cmd.Flags().StringVar(&repoURL, "repo", "", "list the workloads stored in this repository instead (no cluster needed)")
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "with --repo: read the repository password from this file (else AMBER_PASSWORD)")
	return cmd
}

// backups lists the Backups of the namespace (every namespace with all),
// only policy's when policy is set, oldest first.
func (c *conn) backups(ctx context.Context, all bool, policy string) ([]amberv1.Backup, error) {
	var list amberv1.BackupList
	if err := c.list(ctx, resBackups, all, &list); err != nil {
		return nil, err
	}
	out := list.Items[:0]
	for _, b := range list.Items {
		if policy == "" || b.Spec.PolicyRef.Name == policy {
			out = append(out, b)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := when(&out[i]), when(&out[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		if ci, cj := out[i].CreationTimestamp.Time, out[j].CreationTimestamp.Time; !ci.Equal(cj) {
			return ci.Before(cj)
		}
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// when orders Backups: when it started, else when it was made.
func when(b *amberv1.Backup) time.Time {
	if b.Status.StartedAt != nil {
		return b.Status.StartedAt.Time
	}
	return b.CreationTimestamp.Time
}

// policyExists returns nil when BackupPolicy name exists (in any
// namespace, with all), else an error that says so.
func (c *conn) policyExists(ctx context.Context, all bool, name string) error {
	if !all {
		var p amberv1.BackupPolicy
		return c.get(ctx, resPolicies, name, &p)
	}
	var list amberv1.BackupPolicyList
	if err := c.list(ctx, resPolicies, true, &list); err != nil {
		return err
	}
	for _, p := range list.Items {
		if p.Name == name {
			return nil
		}
	}
	return fmt.Errorf("BackupPolicy %q not found in any namespace (list the policies with `%s status -A`)", name, c.prog)
}
