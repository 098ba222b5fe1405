package kubectl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/amber-backup/amber/plugins/api/clock"
)

// PluginName is the file name under which the amber binary is the kubectl
// plugin `kubectl amber`.
const PluginName = "kubectl-amber"

// Options configure the command tree.
type Options struct {
	// Plugin makes the command the root of the kubectl plugin: it is shown
	// as `kubectl amber` and declares --json and --quiet itself (under
	// amber they are amber's global flags, which the commands read).
	Plugin bool
	// Clock tells the time for ages and running durations; nil: the real
	// clock.
	Clock clock.Clock
	// Workloads reads the workloads a repository holds (ls --repo).
	Workloads WorkloadLister
}

// ErrUsage marks a bad command line: errors.Is(err, ErrUsage).
var ErrUsage = errors.New("bad command line")

type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// globals are the flags every command shares.
type globals struct {
	prog       string // how the user calls the tree: "amber k8s" or "kubectl amber"
	kubeconfig string
	context    string
	namespace  string
	clk        clock.Clock
	workloads  WorkloadLister
}

// Command returns `amber k8s` (or, with o.Plugin, `kubectl amber`) and its
// subcommands backup, restore, ls and status.
func Command(o Options) *cobra.Command {
	g := &globals{prog: "amber k8s", clk: clock.Or(o.Clock), workloads: o.Workloads}
	use := "k8s"
	if o.Plugin {
		g.prog = "kubectl amber"
		use = PluginName
	}
	p := g.prog
	cmd := &cobra.Command{
		Use:   use,
		Short: "Back up, restore and inspect the databases Amber protects on Kubernetes",
		Long: `Drive Amber's Kubernetes half from the command line: ask for a backup of a
StatefulSet's database now, restore one into a clone StatefulSet, and see
what the controller reports about Backups and BackupPolicies. These commands
create and read the amber.dev objects (BackupPolicy, Backup, Restore)
through the Kubernetes API; amber-controller does the work.

The same commands are the kubectl plugin ` + "`kubectl amber`" + `: install the amber
binary (or a link to it) as kubectl-amber anywhere on $PATH.

The cluster comes from --kubeconfig, else $KUBECONFIG, else ~/.kube/config,
else the pod's service account when run inside a cluster. The namespace is
--namespace, else the kubeconfig context's namespace, else "default".`,
		Example: `  ` + p + ` backup pg --wait   # back up now and wait until it is stored
  ` + p + ` restore pg --name pg-copy --to-time 2026-11-27T18:00:00Z --wait
  ` + p + ` ls -n prod         # the Backups of namespace prod
  ` + p + ` status -A          # every BackupPolicy: archivers, last good backup, next run`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	if o.Plugin {
		cmd.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: g.prog}
		cmd.SilenceUsage = true
		cmd.SilenceErrors = true
		cmd.PersistentFlags().Bool("json", false, "print exactly one JSON document on stdout")
		cmd.PersistentFlags().BoolP("quiet", "q", false, "no progress output")
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	pf.StringVar(&g.context, "context", "", "kubeconfig context (default: its current context)")
	pf.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default: the context's namespace)")
	cmd.AddCommand(g.backupCommand(), g.restoreCommand(), g.lsCommand(), g.statusCommand())
	return cmd
}

// boolFlag reads a boolean flag the command has or inherits (json, quiet);
// false when there is none.
func boolFlag(cmd *cobra.Command, name string) bool {
	v, err := cmd.Flags().GetBool(name)
	return err == nil && v
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

func maxArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("%s takes at most %s, got %q", cmd.CommandPath(), what, args)
		}
		return nil
	}
}

// printJSON writes v as the command's one JSON document.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortID is the 12-digit prefix `amber ls` shows; amber restore takes it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
