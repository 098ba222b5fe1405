package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/spf13/cobra"
)

func (e *env) archiveCommand() *cobra.Command {
	var (
		engine, dsnFlag, dsnFile, slot string
		flush                          time.Duration
		synchronous                    bool
		options, settings              []string
	)
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "Archive the database's log (WAL) continuously, in the foreground",
		Long: `Stream the database's log into the repository until stopped. The database
releases log only once it is durable in the repository (PostgreSQL: a physical
replication slot advances only then), so it never discards log that is not
safe. Partial segments are made durable at least every --flush-interval under
load, which bounds the recovery point; completed segments replace them. A
promotion (a new PostgreSQL timeline) is followed without stopping; a gap is
reported, never skipped. A plugin that dies is restarted and archiving resumes
where the repository's log ends.

--synchronous (PostgreSQL) stores received WAL at once instead of every
--flush-interval, and tells the server each position the moment it is durable
in the repository. With synchronous_standby_names naming the archiver (its
application_name: the slot's name, "amber", unless the DSN sets one), no
commit is acknowledged before its WAL is in the repository: a recovery point
objective of zero, at the price of one repository write in every commit's
latency (docs/benchmarks.md). If the archiver stops, such commits wait until
it is back: name a second synchronous standby, or use ANY 1 (...), to keep
writes going.

The connection string comes from --dsn-file, --dsn or AMBER_DSN, and is never
printed or logged. SIGTERM or SIGINT make everything received durable, then
amber exits 0.`,
		Example: "  AMBER_DSN='host=db user=amber_repl' amber archive --engine postgres\n  amber archive --engine postgres --dsn-file /etc/amber/dsn --flush-interval 250ms",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := dsn(dsnFlag, dsnFile, "AMBER_DSN")
			if err != nil {
				return err
			}
			if engine == "" || d == "" {
				return usagef("archive needs --engine and a connection string (--dsn-file, --dsn or AMBER_DSN)")
			}
			ctx := cmd.Context()
			host, eng, r, err := e.openEngineAndRepo(ctx, engine)
			if err != nil {
				return err
			}
			defer host.Close()
			defer r.Close()
			// Engine options: a plugin refuses one it does not take
			// (--slot and --synchronous are PostgreSQL's).
			opts, err := parseOptions(options)
			if err != nil {
				return err
			}
			set, err := parseSettings(settings)
			if err != nil {
				return err
			}
			if opts == nil {
				opts = map[string]string{}
			}
			if slot != "" {
				opts["slot"] = slot
			}
			if synchronous {
				opts["synchronous"] = "on"
			}
			rep, err := job.Archive(ctx, r, eng, job.ArchiveRun{Engine: engine, Target: api.Target{DSN: d, Settings: set},
				FlushInterval: flush, Options: opts,
				OnStart: func(stream, version string, _ *archive.Stats) {
					fmt.Fprintf(e.stderr, "archiving %s (%s) into stream %s; stop with SIGTERM\n", engine, version, stream)
				}}, nil)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(rep)
			}
			fmt.Fprintf(e.stderr, "archived %d segments (%s) up to %s\n", rep.Segments, humanBytes(rep.Bytes), rep.LastPosition)
			return nil
		},
	}
	cmd.Flags().StringVar(&engine, "engine", "", "database engine plugin: postgres, mysql, mongodb")
	cmd.Flags().StringVar(&dsnFlag, "dsn", "", "connection string of a role allowed to replicate (default: env AMBER_DSN); prefer --dsn-file")
	cmd.Flags().StringVar(&dsnFile, "dsn-file", "", "read the connection string from this file")
	cmd.Flags().StringVar(&slot, "slot", "", "replication slot name (PostgreSQL; empty: amber)")
	cmd.Flags().BoolVar(&synchronous, "synchronous", false, "PostgreSQL: store WAL at once and report it flushed only when durable (RPO 0 with synchronous_standby_names)")
	cmd.Flags().DurationVar(&flush, "flush-interval", 500*time.Millisecond, "make log durable at least this often under load (bounds the recovery point)")
	cmd.Flags().StringArrayVar(&options, "option", nil, "engine archiving option as key=value (repeatable), e.g. server_id=4242 (mysql: the replica id it connects with); see the engine's docs")
	settingFlag(cmd)(&settings)
	return cmd
}

// logCommands are the commands a database server runs itself to hand over
// and fetch log files: PostgreSQL's archive_command and restore_command.
func (e *env) logCommands() []*cobra.Command {
	var (
		engine, stream, spool string
		settings              []string
		done                  bool
	)
	fetch := &cobra.Command{
		Use:     "log-fetch NAME DEST",
		Aliases: []string{"wal-fetch"},
		Short:   "restore_command: fetch one archived log file (PostgreSQL WAL)",
		Long: `Copy the archived log file the server calls NAME to DEST. 'amber restore
--data-dir' sets this up as the restored server's restore_command by itself,
with a key slot for that restore alone, whose secret is kept beside the data
directory for the server's user and revoked when recovery ends; the
plugin adds the --setting words it needs to read file names. A segment
archived only partially (the newest) is served zero-filled to its whole size,
which PostgreSQL reads as the end of WAL. With --spool, the next segments are
fetched ahead into that directory, so most calls never open the repository.
Exit status 1 with no output file means the file is not in the archive.

With --done (the server's recovery_end_command) the restore's key slot is
removed from the repository, and its secret and the spool from the disk.`,
		Example: `  restore_command = 'amber log-fetch --engine postgres --stream postgres-7301234567890123456 --repo /srv/backups --password-file /etc/amber/pw %f %p'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if done {
				o := &opener{e: e}
				defer o.Close()
				return job.DoneFetching(cmd.Context(), o, e.passwordFile, spool)
			}
			if len(args) != 2 {
				return usagef("log-fetch takes NAME and DEST (%%f %%p)")
			}
			set, err := parseSettings(settings)
			if err != nil {
				return err
			}
			o := &opener{e: e}
			defer o.Close()
			err = job.FetchLogFile(cmd.Context(), o, job.LogFileFetch{Engine: engine, Stream: stream, Name: args[0],
				Dest: args[1], Spool: spool, Settings: set, Ahead: 8})
			if errors.Is(err, job.ErrNoLogFile) {
				return fmt.Errorf("%s is not in the archive", args[0])
			}
			return err
		},
	}
	fetch.Flags().StringVar(&spool, "spool", "", "directory to fetch the next segments into ahead of time")
	fetch.Flags().StringArrayVar(&settings, "setting", nil, "key=value the plugin put on the command line (repeatable)")
	fetch.Flags().BoolVar(&done, "done", false, "recovery has ended: remove the credential (--password-file) and the spool")
	push := &cobra.Command{
		Use:     "log-push PATH",
		Aliases: []string{"wal-push"},
		Short:   "archive_command: archive one completed log file (PostgreSQL WAL)",
		Long: `Store the log file at PATH in the repository and exit 0 only once it is
durable, so the server recycles it only then. For users who prefer
PostgreSQL's archive_command over 'amber archive' (which streams, for a
recovery point of about a second instead of a segment). The plugin reads the
file's name; a file already archived with equal content is accepted, with
different content refused.`,
		Example: `  archive_command = 'amber log-push --engine postgres --stream postgres-7301234567890123456 --repo /srv/backups --password-file /etc/amber/pw %p'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("log-push takes PATH (%%p)")
			}
			o := &opener{e: e}
			defer o.Close()
			return job.PushLogFile(cmd.Context(), o, engine, stream, args[0])
		},
	}
	for _, c := range []*cobra.Command{fetch, push} {
		c.Flags().StringVar(&engine, "engine", "postgres", "database engine plugin")
		c.Flags().StringVar(&stream, "stream", "", "log stream: <engine>-<system identifier> (see `amber ls`)")
	}
	return []*cobra.Command{fetch, push}
}

func parseSettings(kv []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usagef("--setting %q is not key=value", s)
		}
		out[k] = v
	}
	return out, nil
}
