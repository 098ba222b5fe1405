package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"

	"github.com/amber-backup/amber/controller/kubectl"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/location"
)

// listWorkloads reads the workloads a repository holds for `amber k8s ls
// --repo`: storage keys from the environment (or AMBER_CREDENTIALS_DIR),
// the password from passwordFile or AMBER_PASSWORD.
func listWorkloads(ctx context.Context, url, passwordFile string) ([]kubectl.Workload, error) {
	password, err := readSecret(passwordFile, "AMBER_PASSWORD", "--password-file")
	if err != nil {
		return nil, err
	}
	getenv := os.Getenv
	if d := os.Getenv("AMBER_CREDENTIALS_DIR"); d != "" {
		getenv = credentialsDir(d)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := location.Open(ctx, url, location.Options{Getenv: getenv, Logger: log})
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, be, password, repo.Options{CacheDir: "-", Logger: log})
	if err != nil {
		be.Close()
		return nil, err
	}
	defer r.Close()
	ws, err := r.Workloads(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]kubectl.Workload, 0, len(ws))
	for _, w := range ws {
		kw := kubectl.Workload{ID: w.ID.String(), Backup: w.Backup.String(), Namespace: w.Namespace, Name: w.Name,
			Engine: w.Engine, Policy: w.Policy, Captured: w.Captured}
		for _, o := range w.Objects {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if json.Unmarshal(o, &meta) == nil {
				kw.Objects = append(kw.Objects, meta.Kind+"/"+meta.Metadata.Name)
			}
		}
		out = append(out, kw)
	}
	return out, nil
}
