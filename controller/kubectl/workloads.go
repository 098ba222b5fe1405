package kubectl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// workloadDoc is one captured workload as `ls --repo --json` prints it:
// object kinds and names, never their contents.
type workloadDoc struct {
	ID        string    `json:"id"`
	Backup    string    `json:"backup"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Engine    string    `json:"engine,omitempty"`
	Policy    string    `json:"policy,omitempty"`
	Captured  time.Time `json:"captured"`
	Objects   []string  `json:"objects"`
}

// Workload is one workload stored in a repository, by kind and name of
// its objects (never their contents).
type Workload struct {
	ID, Backup, Namespace, Name, Engine, Policy string
	Captured                                    time.Time
	Objects                                     []string
}

// WorkloadLister reads the workloads stored in the repository at url with
// the password from passwordFile (else AMBER_PASSWORD) and the storage
// keys from the environment. The amber binary supplies it, so this
// package stays free of repository code.
type WorkloadLister func(ctx context.Context, url, passwordFile string) ([]Workload, error)

// listWorkloads prints the workloads stored in the repository at url; no
// cluster is needed.
func listWorkloads(ctx context.Context, lister WorkloadLister, out, errOut io.Writer, url, passwordFile string, asJSON bool) error {
	if lister == nil {
		return errors.New("this build cannot read repositories")
	}
	ws, err := lister(ctx, url, passwordFile)
	if err != nil {
		return err
	}
	docs := make([]workloadDoc, 0, len(ws))
	for _, w := range ws {
		objs := w.Objects
		if objs == nil {
			objs = []string{}
		}
		docs = append(docs, workloadDoc{ID: w.ID, Backup: w.Backup, Namespace: w.Namespace, Name: w.Name, Engine: w.Engine,
			Policy: w.Policy, Captured: w.Captured, Objects: objs})
	}
	if asJSON {
		return printJSON(out, map[string]any{"workloads": docs})
	}
	if len(docs) == 0 {
		_, err := fmt.Fprintln(errOut, "no workloads in this repository (amber-controller stores one with each Backup)")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSTATEFULSET\tENGINE\tPOLICY\tCAPTURED\tBACKUP ID\tOBJECTS")
	for _, d := range docs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Namespace, d.Name, orDash(d.Engine), orDash(d.Policy),
			d.Captured.Local().Format(time.DateTime), shortID(d.Backup), strings.Join(d.Objects, ","))
	}
	return tw.Flush()
}
