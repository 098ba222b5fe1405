package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/location"
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

// listWorkloads prints the workloads stored in the repository at url,
// read with the bucket's keys from the environment and the password from
// passwordFile or AMBER_PASSWORD; no cluster is needed.
func listWorkloads(ctx context.Context, out, errOut io.Writer, url, passwordFile string, asJSON bool) error {
	var password string
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return fmt.Errorf("read --password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	} else {
		password = os.Getenv("AMBER_PASSWORD")
	}
	if password == "" {
		return usagef("no repository password: set AMBER_PASSWORD or use --password-file")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := location.Open(ctx, url, location.Options{Logger: log})
	if err != nil {
		if errors.Is(err, location.ErrBadURL) {
			return usagef("%v", err)
		}
		return err
	}
	r, err := repo.Open(ctx, be, []byte(password), repo.Options{CacheDir: "-", Logger: log})
	if err != nil {
		be.Close()
		return err
	}
	defer r.Close()
	ws, err := r.Workloads(ctx)
	if err != nil {
		return err
	}
	docs := make([]workloadDoc, 0, len(ws))
	for _, w := range ws {
		d := workloadDoc{ID: w.ID.String(), Backup: w.Backup.String(), Namespace: w.Namespace, Name: w.Name, Engine: w.Engine,
			Policy: w.Policy, Captured: w.Captured, Objects: []string{}}
		for _, o := range w.Objects {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if json.Unmarshal(o, &meta) == nil {
				d.Objects = append(d.Objects, meta.Kind+"/"+meta.Metadata.Name)
			}
		}
		docs = append(docs, d)
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
