// Package cli implements the `amber` command line: the cobra command tree,
// repository URLs, passwords, --json output and progress.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/amber-backup/amber/controller/kubectl"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/spf13/cobra"
)

// env carries what commands share: streams and global flags.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	repoURL      string
	passwordFile string
	cacheDir     string
	keySlot      string
	compression  string
	// getenv reads storage credentials and defaults; nil: os.Getenv.
	getenv  func(string) string
	jsonOut bool
	quiet   bool
	printed bool // the one JSON document has been written
	log     *slog.Logger
}

// exitError carries an exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs amber with args and returns the process exit code: 0 on
// success, 1 when the work failed, 2 for a bad command line, 3 when verify
// found problems.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return MainAs("amber", args, stdin, stdout, stderr)
}

// MainAs is Main for a process started as argv0: installed as
// kubectl-amber, amber is the kubectl plugin `kubectl amber`, whose
// commands are those of `amber k8s`.
func MainAs(argv0 string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	prog, root := "amber", (*cobra.Command)(nil)
	if strings.TrimSuffix(filepath.Base(argv0), ".exe") == kubectl.PluginName {
		prog, root = "kubectl amber", kubectl.Command(kubectl.Options{Plugin: true, Workloads: listWorkloads})
		root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err: err} })
	} else {
		root = e.rootCommand()
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	// The k8s commands write their one JSON document through cobra.
	root.SetOut(markWriter{w: stdout, written: &e.printed})
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(job.WithLogger(ctx, e.log))
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ue), errors.Is(err, kubectl.ErrUsage), strings.HasPrefix(err.Error(), "unknown command"),
		strings.HasPrefix(err.Error(), "unknown flag"):
		code = 2
	}
	if (e.jsonOut || slices.Contains(args, "--json")) && !e.printed {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		fmt.Fprintln(stdout, string(b))
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	if code == 2 {
		fmt.Fprintf(stderr, "Run '%s --help' (or '%s <command> --help') for usage.\n", prog, prog)
	}
	return code
}

// markWriter sets *written on the first write to w.
type markWriter struct {
	w       io.Writer
	written *bool
}

func (m markWriter) Write(p []byte) (int, error) {
	*m.written = true
	return m.w.Write(p)
}

// usageError marks a bad command line.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "amber",
		Short: "Application-consistent, database-aware backups into one encrypted repository",
		Long: `amber backs up databases (and any stream) into a repository that is
deduplicated, compressed and encrypted on this machine before anything is
stored. A repository lives in a local directory, on Backblaze B2 or in an
S3 bucket, and holds everything needed to restore: with only the bucket and
the password, any machine can list, verify and restore every backup.

Repository URLs (--repo, or AMBER_REPO):
  /srv/backups  or  file:///srv/backups      a local directory (the default kind)
  b2://bucket/prefix                          Backblaze B2 (B2_APPLICATION_KEY_ID, B2_APPLICATION_KEY)
  s3://bucket/prefix?endpoint=host:port&region=r   S3 or S3-compatible (AWS credential chain)

Where a bucket keeps versions, removing an object (prune, unlock) writes a
delete marker (S3) or hides the name (B2): earlier versions stay until the
bucket's lifecycle rules expire them. The URL parameter purge=true deletes
every version instead. b2://bucket/prefix?lock-days=N (and optionally
lock-mode=governance or compliance) uploads every object except those under
locks/ and writers/ and partial log segments under B2 Object Lock for N days:
no key holder can delete those versions before then. A key holder can still
upload a newer version of a name or hide it, and amber reads only the latest
version; an operator undoes that by deleting the newer version or the hide
marker (docs/repository-format.md, "Object Lock and versioning").

The repository password comes from AMBER_PASSWORD or --password-file. Storage
keys come from the environment, or from files named after the variables in
the directory AMBER_CREDENTIALS_DIR (a mounted Kubernetes Secret).`,
		Example: `  export AMBER_REPO=/srv/backups AMBER_PASSWORD='correct horse'
  amber repo init
  pg_dump mydb | amber backup --stdin --name mydb
  amber ls
  amber restore --backup latest --stdout > mydb.sql
  amber verify --read-data`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err: err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&e.repoURL, "repo", "r", os.Getenv("AMBER_REPO"), "repository URL (env AMBER_REPO)")
	pf.StringVar(&e.passwordFile, "password-file", os.Getenv("AMBER_PASSWORD_FILE"), "read the repository password from this file (env AMBER_PASSWORD_FILE; else AMBER_PASSWORD)")
	pf.StringVar(&e.cacheDir, "cache-dir", os.Getenv("AMBER_CACHE_DIR"), "local metadata cache (default: the user cache dir; \"-\" disables it)")
	pf.StringVar(&e.keySlot, "key-slot", "", "try only this key slot (a restore's log fetch uses its own)")
	pf.StringVar(&e.compression, "compression", envOr("AMBER_COMPRESSION", "fastest"), "compression of the data this command stores: zstd at fastest (level 1), default (level 3, as restic's auto) or better, or s2 (faster, larger, for those who would pick lz4; repositories with s2 data need an amber that reads them); reading needs no setting (env AMBER_COMPRESSION)")
	pf.BoolVar(&e.jsonOut, "json", false, "print exactly one JSON document on stdout")
	pf.BoolVarP(&e.quiet, "quiet", "q", false, "no progress output")

	root.AddCommand(e.repoCommand(), e.keyCommand(), e.backupCommand(), e.restoreCommand(), e.lsCommand(),
		e.verifyCommand(), e.pruneCommand(), e.catCommand(), e.unlockCommand(), e.archiveCommand())
	root.AddCommand(e.repairCommand())
	root.AddCommand(e.sidecarCommand())
	root.AddCommand(e.logCommands()...)
	root.AddCommand(kubectl.Command(kubectl.Options{Workloads: listWorkloads}))
	return root
}

// printJSON writes v as the command's one JSON document.
func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	e.printed = true
	_, err = fmt.Fprintln(e.stdout, string(b))
	return err
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
