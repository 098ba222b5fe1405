package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/spf13/cobra"
)

func (e *env) repoCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "repo", Short: "Create repositories"}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create a new, empty repository",
		Long: `Create a repository at --repo, protected by the password from AMBER_PASSWORD
or --password-file. A random master key encrypts everything; the password
only unlocks a key slot that wraps it (add more with 'amber key add').
Keep the password safe: without it nothing in the repository can be read.`,
		Example: `  AMBER_PASSWORD=... amber repo init --repo /srv/backups
  amber repo init --repo b2://my-bucket/db1 --password-file /etc/amber/pw`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts, err := e.repoOptions()
			if err != nil {
				return err
			}
			pw, err := e.password()
			if err != nil {
				return err
			}
			be, err := e.openBackend(ctx, true)
			if err != nil {
				return err
			}
			defer be.Close()
			r, err := repo.Init(ctx, be, pw, opts)
			if err != nil {
				return fmt.Errorf("init %s: %w", be.Location(), err)
			}
			cfg := r.Config()
			if e.jsonOut {
				return e.printJSON(map[string]any{"id": cfg.ID, "location": be.Location(), "version": cfg.Version})
			}
			fmt.Fprintf(e.stdout, "created repository %s at %s\n", cfg.ID[:12], be.Location())
			return nil
		},
	})
	return cmd
}

func (e *env) keyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the passwords (key slots) that open a repository",
		Long: `A repository's data is encrypted with one random master key. Each key slot
wraps that master key with one password (Argon2id), so passwords can be
added, rotated and removed without rewriting any data.`,
	}
	var newPwFile string
	add := &cobra.Command{
		Use:     "add",
		Short:   "Add a password (from AMBER_NEW_PASSWORD or --new-password-file)",
		Example: "  AMBER_PASSWORD=old AMBER_NEW_PASSWORD=new amber key add --repo /srv/backups",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			newPw, err := readSecret(newPwFile, "AMBER_NEW_PASSWORD", "--new-password-file")
			if err != nil {
				return err
			}
			r, err := e.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			name, err := r.AddKey(cmd.Context(), newPw, testKDF)
			if err != nil {
				return err
			}
			id := strings.TrimPrefix(name, "keys/")
			if e.jsonOut {
				return e.printJSON(map[string]string{"id": id})
			}
			fmt.Fprintf(e.stdout, "added key %s\n", id[:12])
			return nil
		},
	}
	add.Flags().StringVar(&newPwFile, "new-password-file", os.Getenv("AMBER_NEW_PASSWORD_FILE"), "file holding the new password")
	list := &cobra.Command{
		Use:   "list",
		Short: "List key slots",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := e.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := r.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(keys)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, " \tID\tCREATED\tHOST")
			for _, k := range keys {
				cur := " "
				if k.Current {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, k.ID[:12], k.Created.Local().Format(time.DateTime), k.Host)
			}
			return tw.Flush()
		},
	}
	remove := &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a key slot (not the one whose password you are using)",
		Example: "  AMBER_PASSWORD=new amber key remove 3fa1c2 --repo /srv/backups",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("key remove takes one key id (see `amber key list`)")
			}
			r, err := e.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			if err := r.RemoveKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(map[string]string{"removed": args[0]})
			}
			fmt.Fprintf(e.stdout, "removed key %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

// backupResult is the --json document of `amber backup`.
type backupResult struct {
	ID         string  `json:"id"`
	ShortID    string  `json:"short_id"`
	Name       string  `json:"name"`
	BytesIn    int64   `json:"bytes_in"`
	BytesAdded int64   `json:"bytes_added"`
	DurationS  float64 `json:"duration_s"`
	ChunksNew  int64   `json:"chunks_new"`
	ChunksSeen int64   `json:"chunks_deduplicated"`
	// Physical backups with file records only (--data-dir, and
	// PostgreSQL's BASE_BACKUP, whose incremental files are patched).
	FilesRead    int64  `json:"files_read,omitempty"`
	FilesReused  int64  `json:"files_reused,omitempty"`
	FilesPatched int64  `json:"files_patched,omitempty"`
	BytesReused  int64  `json:"bytes_reused,omitempty"`
	Previous     string `json:"previous,omitempty"`
}

func (e *env) backupCommand() *cobra.Command {
	var (
		stdin                    bool
		name                     string
		tags, opts, settings     []string
		engine, dsnFlag, dsnFile string
		mode, dataDir            string
		full                     bool
	)
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up a stream (and, with an engine, a database)",
		Long: `Back up everything read from standard input (--stdin) as one backup, or, with
--engine, the database the connection string names, through that engine's
plugin: --mode physical (the whole cluster, restorable to any point in time
with archived log) or --mode logical (a dump).

The data is cut into content-defined chunks, so data already in the
repository is stored only once, whichever backup or replica wrote it first.
The backup becomes visible only when complete: an interrupted backup leaves
nothing that 'amber ls' shows, and 'amber prune' removes what it had uploaded.

With --data-dir DIR, a physical backup reads the database's files from DIR
itself, several at a time, where amber runs beside the database (a sidecar
sharing its volume, or the database's own machine); the engine still
coordinates the backup through the connection string, and the backup
restores like any other. With PostgreSQL such a backup is incremental
forever: a file whose
size, times and inode are those recorded by the previous backup of the same
name and database, and that had not changed since shortly before that
backup started, is not read again; the backup refers to the bytes the
previous one stored (the control file and the backup's log are always read).
Every backup still restores on its own as a full one. --full reads every
file.

The connection string comes from --dsn-file, --dsn or AMBER_DSN, and is never
printed or logged.`,
		Example: `  AMBER_DSN='host=db user=amber' amber backup --engine postgres --mode physical --name orders
  amber backup --engine postgres --dsn-file /etc/amber/dsn --data-dir /var/lib/postgresql/data
  amber backup --engine postgres --dsn-file /etc/amber/dsn --data-dir /var/lib/postgresql/data --full
  amber backup --engine postgres --dsn-file /etc/amber/dsn --mode logical
  pg_dump -Fc mydb | amber backup --stdin --name mydb --tag env=prod
  tar -C /data -c . | amber backup --stdin --name data --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tagMap, err := parseTags(tags)
			if err != nil {
				return err
			}
			optMap, err := parseOptions(opts)
			if err != nil {
				return err
			}
			set, err := parseSettings(settings)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if (len(optMap) > 0 || len(set) > 0) && engine == "" {
				return usagef("--option and --setting are for engine backups: give --engine")
			}
			if full && dataDir == "" {
				return usagef("--full is for file-level backups: give --data-dir")
			}
			if dataDir != "" && (engine == "" || mode != job.ModePhysical) {
				return usagef("--data-dir is for physical engine backups: give --engine (and --mode physical)")
			}
			if dataDir != "" {
				abs, err := filepath.Abs(dataDir)
				if err != nil {
					return usagef("--data-dir %s: %v", dataDir, err)
				}
				dataDir = abs
			}
			if engine != "" {
				if stdin {
					return usagef("--stdin and --engine exclude each other")
				}
				d, err := dsn(dsnFlag, dsnFile, "AMBER_DSN")
				if err != nil {
					return err
				}
				if d == "" {
					return usagef("--engine needs the database's connection string: --dsn-file, --dsn or AMBER_DSN")
				}
				host, eng, r, err := e.openEngineAndRepo(ctx, engine)
				if err != nil {
					return err
				}
				defer host.Close()
				defer r.Close()
				progress, stop := e.track("backup", 0)
				rep, err := job.BackupEngine(ctx, r, eng, job.EngineBackup{Engine: engine, Mode: mode, Name: name, Tags: tagMap,
					Target: api.Target{DSN: d, DataDir: dataDir, Settings: set}, Options: optMap, Full: full}, nil, progress)
				stop()
				if err != nil {
					return e.jobError(err)
				}
				return e.reportBackup(rep)
			}
			if !stdin {
				return usagef("nothing to back up: use --stdin, or --engine with a connection string")
			}
			if name == "" {
				return usagef("--name is required: it groups backups for listing and retention")
			}
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			progress, stop := e.track("backup", 0)
			rep, err := job.StreamBackup(ctx, r, name, tagMap, e.stdin, nil, progress)
			stop()
			if err != nil {
				return e.jobError(err)
			}
			return e.reportBackup(rep)
		},
	}
	cmd.Flags().BoolVar(&stdin, "stdin", false, "back up standard input")
	cmd.Flags().StringVar(&engine, "engine", "", "database engine plugin: postgres, mysql, mongodb")
	cmd.Flags().StringVar(&dsnFlag, "dsn", "", "database connection string (default: env AMBER_DSN); prefer --dsn-file, as arguments show in ps")
	cmd.Flags().StringVar(&dsnFile, "dsn-file", "", "read the database connection string from this file")
	cmd.Flags().StringVar(&mode, "mode", "physical", "with --engine: physical (whole cluster, restorable to any point in time) or logical (a dump)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "physical: read the database's files from this data directory instead of over the network (postgres; --option workers=N files at once)")
	cmd.Flags().BoolVar(&full, "full", false, "with --data-dir (postgres): read every file, reusing nothing of the previous backup")
	cmd.Flags().StringVar(&name, "name", "", "backup name (required with --stdin; default: the engine), e.g. the database")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "tag as key=value (repeatable)")
	cmd.Flags().StringArrayVar(&opts, "option", nil, "engine option as key=value (repeatable), e.g. users=true (mysql logical: accounts and grants); see the engine's docs")
	settingFlag(cmd)(&settings)
	return cmd
}

// settingFlag adds --setting to an engine command: the engine's settings
// of its target (where its tools are, which lineage a server belongs to),
// which, unlike options, every command on that database should be given
// alike.
func settingFlag(cmd *cobra.Command) func(*[]string) {
	return func(p *[]string) {
		cmd.Flags().StringArrayVar(p, "setting", nil, "engine setting of the target as key=value (repeatable), e.g. bin_dir=/usr/lib/postgresql/16/bin, lineage=orders (mysql); give every command on one database the same; see the engine's docs")
	}
}

// parseOptions reads --option key=value flags into the engine's options.
func parseOptions(opts []string) (map[string]string, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(opts))
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return nil, usagef("--option %q: want key=value", o)
		}
		m[k] = v
	}
	return m, nil
}

func (e *env) reportBackup(rep *job.BackupReport) error {
	res := backupResult{ID: rep.ID.String(), ShortID: rep.ID.Short(), Name: rep.Name, BytesIn: rep.BytesIn,
		BytesAdded: rep.BytesAdded, DurationS: rep.Duration.Seconds(), ChunksNew: rep.ChunksNew, ChunksSeen: rep.ChunksSeen,
		FilesRead: rep.FilesRead, FilesReused: rep.FilesReused, FilesPatched: rep.FilesPatched, BytesReused: rep.BytesReused}
	if rep.Previous != (repo.ID{}) {
		res.Previous = rep.Previous.String()
	}
	if e.jsonOut {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "backup %s saved: %s read, %s added in %.1fs\n", res.ShortID,
		humanBytes(res.BytesIn), humanBytes(res.BytesAdded), res.DurationS)
	switch {
	case res.FilesPatched > 0:
		fmt.Fprintf(e.stdout, "files: %d sent whole, %d changed blocks applied to backup %s's (%s of it kept without reading)\n",
			res.FilesRead, res.FilesPatched, rep.Previous.Short(), humanBytes(res.BytesReused))
	case res.FilesRead > 0 || res.FilesReused > 0:
		fmt.Fprintf(e.stdout, "files: %d read, %d unchanged since backup %s (%s not read again)\n", res.FilesRead, res.FilesReused,
			rep.Previous.Short(), humanBytes(res.BytesReused))
	}
	return nil
}

func parseTags(tags []string) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := make(map[string]string)
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, usagef("tag %q is not key=value", t)
		}
		out[k] = v
	}
	return out, nil
}

// lsEntry is one backup in `amber ls --json`.
type lsEntry struct {
	ID             string            `json:"id"`
	ShortID        string            `json:"short_id"`
	Name           string            `json:"name"`
	Engine         string            `json:"engine,omitempty"`
	Mode           string            `json:"mode,omitempty"`
	Start          time.Time         `json:"start"`
	End            time.Time         `json:"end"`
	BytesIn        int64             `json:"bytes_in"`
	BytesAdded     int64             `json:"bytes_added"`
	BytesReused    int64             `json:"bytes_reused,omitempty"`
	Host           string            `json:"host,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	Position       string            `json:"position,omitempty"`
	ConsistentTime *time.Time        `json:"consistent_time,omitempty"`
	// Snapshots of a snapshot backup (mode "snapshot").
	Snapshots []repo.VolumeSnapshot `json:"snapshots,omitempty"`
}

func (e *env) lsCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List backups",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			all, err := r.Backups(ctx)
			if err != nil {
				return err
			}
			list := []lsEntry{}
			for _, m := range all {
				if name != "" && m.Name != name {
					continue
				}
				le := lsEntry{ID: m.ID.String(), ShortID: m.ID.Short(), Name: m.Name, Engine: m.Engine, Mode: m.Mode,
					Start: m.Start, End: m.End, BytesIn: m.BytesIn, BytesAdded: m.BytesAdded, BytesReused: m.BytesReused, Host: m.Host, Tags: m.Tags,
					Position: m.Position, Snapshots: m.Snapshots}
				if !m.ConsistentTime.IsZero() {
					t := m.ConsistentTime
					le.ConsistentTime = &t
				}
				list = append(list, le)
			}
			windows, err := job.Windows(ctx, r, all)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(map[string]any{"backups": list, "windows": windows})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTARTED\tDURATION\tSIZE\tADDED\tTAGS")
			for _, b := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ShortID, b.Name, b.Start.Local().Format(time.DateTime),
					b.End.Sub(b.Start).Round(time.Second/10), humanBytes(b.BytesIn+b.BytesReused), humanBytes(b.BytesAdded), formatTags(b.Tags))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			printSnapshots(e.stdout, list)
			printWindows(e.stdout, windows)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "only backups of this name")
	return cmd
}

// printSnapshots lists the volume snapshots of snapshot backups, whose
// data is outside the repository.
func printSnapshots(w io.Writer, list []lsEntry) {
	first := true
	for _, b := range list {
		if b.Mode != repo.ModeSnapshot {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nsnapshot backups (data in volume snapshots):")
			first = false
		}
		at := ""
		if b.ConsistentTime != nil {
			at = " " + b.ConsistentTime.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  %s %s: consistent at %s%s\n", b.ShortID, b.Name, b.Position, at)
		for _, s := range b.Snapshots {
			fmt.Fprintf(w, "    %s -> VolumeSnapshot %s/%s (content %s, %s %s)\n", s.Claim, s.Namespace, s.Name, s.Content, s.Driver, s.Handle)
		}
	}
}

func formatTags(t map[string]string) string {
	var parts []string
	for k, v := range t {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (e *env) verifyCommand() *cobra.Command {
	var (
		backupRef string
		readData  bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the repository's integrity",
		Long: `Check that every backup can be restored: key slots, index files and manifests
authenticate, every chunk a backup uses is indexed, and every pack exists
with its recorded size. With --read-data, every pack (of --backup, or all) is
downloaded and every chunk is decrypted, authenticated and checked against its
id, and every log segment is authenticated. Each problem names the object.
Exit status 3 means problems were found.`,
		Example: "  amber verify --read-data\n  amber verify --backup latest --read-data --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			var read int64
			p := e.startProgress("verify", 0, func() int64 { return read })
			rep, err := r.Verify(ctx, repo.VerifyOptions{Backup: backupRef, ReadData: readData, Progress: func(n int64) { read = n }})
			p.Stop()
			if err != nil {
				return err
			}
			if e.jsonOut {
				if err := e.printJSON(rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stdout, "checked %d backups, %d packs, %d chunks, %d log segments; read %s\n",
					rep.Backups, rep.Packs, rep.Blobs, rep.Segments, humanBytes(rep.BytesRead))
				for _, p := range rep.Problems {
					fmt.Fprintf(e.stdout, "PROBLEM %s: %s\n", p.Object, p.Error)
				}
			}
			if !rep.OK() {
				return &exitError{code: 3, err: fmt.Errorf("verify found %d problem(s), first: %s", len(rep.Problems), rep.Problems[0].Object)}
			}
			if !e.jsonOut {
				fmt.Fprintln(e.stdout, "no problems found")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&backupRef, "backup", "", "check only this backup (id, prefix or latest)")
	cmd.Flags().BoolVar(&readData, "read-data", false, "download and check every byte")
	return cmd
}

func (e *env) pruneCommand() *cobra.Command {
	var p repo.PrunePolicy
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Forget old backups and remove data nothing uses",
		Long: `Apply the retention policy to each backup name (a backup is kept if any rule
keeps it), then remove the data no remaining backup uses, including what
interrupted backups left behind. Prune takes the repository's only lock;
backups keep running meanwhile. Packs younger than --grace that no index names
yet are left alone: they may belong to a backup still running.

Archived log (WAL, binlog, oplog) goes with the backups: log that ends before
the start of every kept backup of its database is removed, since there is
nothing left to replay it onto; so is log of an earlier epoch (timeline),
except the piece the newer epoch branches from. The recoverable window then
starts at the oldest kept backup. Log of a database none of whose backups is
kept stays whole, and no log is removed while a backup runs.`,
		Example: "  amber prune --keep-last 7 --keep-within 720h\n  amber prune --keep-last 3 --dry-run --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.KeepLast < 0 || p.KeepWithin < 0 || p.Grace < 0 {
				return usagef("--keep-last, --keep-within and --grace must not be negative")
			}
			ctx := cmd.Context()
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := r.Prune(ctx, p)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(res)
			}
			verb := "removed"
			if p.DryRun {
				verb = "would remove"
			}
			fmt.Fprintf(e.stdout, "%s %d backups (%d kept), %d packs (%d orphaned), %d log segments, freeing %s\n",
				verb, len(res.Forgotten), res.Kept, res.PacksRemoved, res.Orphans, res.LogSegmentsRemoved, humanBytes(res.BytesFreed+res.LogBytesFreed))
			if res.PacksKept != "" {
				fmt.Fprintf(e.stdout, "packs kept: %s\n", res.PacksKept)
			}
			if res.LogKept != "" {
				fmt.Fprintf(e.stdout, "log kept: %s\n", res.LogKept)
			}
			for _, p := range res.Problems {
				fmt.Fprintf(e.stdout, "PROBLEM %s: %s\n", p.Object, p.Error)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&p.KeepLast, "keep-last", 0, "keep the newest N backups of each name")
	cmd.Flags().DurationVar(&p.KeepWithin, "keep-within", 0, "keep backups newer than this (e.g. 168h)")
	cmd.Flags().DurationVar(&p.Grace, "grace", time.Hour, "leave unindexed packs younger than this")
	cmd.Flags().BoolVar(&p.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	return cmd
}

func (e *env) catCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cat config|manifest ID",
		Short: "Print a repository object, decrypted, as JSON",
		Example: `  amber cat config
  amber cat manifest latest`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || (args[0] == "config" && len(args) != 1) || (args[0] == "manifest" && len(args) != 2) ||
				(args[0] != "config" && args[0] != "manifest") {
				return usagef("cat takes `config` or `manifest ID`")
			}
			ctx := cmd.Context()
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			if args[0] == "config" {
				return e.printJSON(r.Config())
			}
			m, err := r.FindBackup(ctx, args[1], "")
			if err != nil {
				return err
			}
			return e.printJSON(m)
		},
	}
}

func (e *env) unlockCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "unlock",
		Short: "Remove the lock of a prune that died",
		Long: `Remove prune locks whose prune is gone: locks not refreshed for 10 minutes
by the storage server's clock (a running prune refreshes its lock every
minute), and locks of a process of this host that no longer runs.

A lock that is still refreshed belongs to a prune that runs, perhaps on
another host; unlock keeps it and names its holder. --force removes it too.
Removing a running prune's lock loses no data (that prune notices backups
that start meanwhile and deletes nothing), but it makes that prune fail.`,
		Example: `  amber unlock
  amber unlock --force   # also the lock of a prune that still refreshes it`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := e.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := r.Unlock(cmd.Context(), force)
			if err != nil {
				return err
			}
			if e.jsonOut {
				if res.Removed == nil {
					res.Removed = []string{}
				}
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "removed %d lock(s)\n", len(res.Removed))
			for _, l := range res.Live {
				fmt.Fprintf(e.stdout, "kept %s: held by %s, refreshed %s ago, so that prune still runs; --force removes it\n",
					l.Name, l.Holder, l.Refreshed.Round(time.Second))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "also remove locks that are still being refreshed")
	return c
}
