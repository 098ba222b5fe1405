package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent"
	"github.com/spf13/cobra"
)

// sidecarCommand is `amber sidecar`: the agent in a database pod.
func (e *env) sidecarCommand() *cobra.Command {
	var (
		engine, dsnFile, certFile, keyFile, caFile string
		dataDir                                    string
		credsDir                                   string
		listen, metricsListen, slot, logLevel      string
		allowed, settings                          []string
		flushS, windowS, leaseS                    string
	)
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the agent in a database pod: the controller's API over mutual TLS, and metrics",
		Long: `Run until SIGTERM next to one database server, with its engine plugin loaded
and the repository open, and serve the agent API (amber.agent.v1, gRPC) to the
controller: probe, backup, freeze and thaw under a lease, the archiver role,
and status. The API speaks TLS 1.3 only and requires a client certificate
signed by the CA in --tls-ca; a caller without one is refused during the
handshake. Prometheus metrics, /healthz and /readyz are served over plain
HTTP on --metrics-listen.

The database's connection string is read from --dsn-file only, never from
the environment, and never reaches the plugin's environment or any log.
On SIGTERM the agent stops accepting calls, cancels a running backup (which
leaves nothing visible), makes all log received by the archiver durable in
the repository, and exits 0. Every flag has an environment variable, for the
pod spec; docs/agent.md lists them.

With --data-dir (the database's data directory, mounted read-only into the
sidecar's container), physical backups read the database's files in
parallel, and reuse the files unchanged since the previous backup of the
same name without reading them again; the sidecar must run as the database's
user to read them. Without it, physical backups go over the replication
protocol.`,
		Example: `  amber sidecar --engine postgres --dsn-file /etc/amber/dsn \
    --repo s3://backups/orders --password-file /etc/amber/repo-password \
    --tls-cert /etc/amber/tls/tls.crt --tls-key /etc/amber/tls/tls.key --tls-ca /etc/amber/tls/ca.crt`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			flush, err1 := parseDur("--flush-interval", flushS)
			window, err2 := parseDur("--window-interval", windowS)
			maxLease, err3 := parseDur("--max-lease", leaseS)
			for _, err := range []error{err1, err2, err3} {
				if err != nil {
					return err
				}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: use debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
			tags := map[string]string{}
			// The injected sidecar gets AMBER_POD_NAME and
			// AMBER_POD_NAMESPACE from the webhook; a sidecar written by
			// hand may use the downward API's usual POD_NAME and
			// POD_NAMESPACE.
			for _, t := range []struct{ tag, env, alt string }{{"pod", "AMBER_POD_NAME", "POD_NAME"},
				{"namespace", "AMBER_POD_NAMESPACE", "POD_NAMESPACE"}} {
				v := os.Getenv(t.env)
				if v == "" {
					v = os.Getenv(t.alt)
				}
				if v != "" {
					tags[t.tag] = v
					log = log.With(t.tag, v)
				}
			}
			e.log = log
			if engine == "" {
				return usagef("name the database engine with --engine or AMBER_ENGINE (postgres)")
			}
			if dsnFile == "" {
				return usagef("the sidecar reads the database's connection string from a file only: give --dsn-file or AMBER_DSN_FILE")
			}
			if credsDir != "" {
				if st, err := os.Stat(credsDir); err != nil || !st.IsDir() {
					return fmt.Errorf("--credentials-dir %s is not a readable directory; mount the credentials Secret there", credsDir)
				}
				e.getenv = credentialsDir(credsDir)
			}
			if dataDir != "" {
				if !filepath.IsAbs(dataDir) {
					return usagef("--data-dir %q: give the data directory's absolute path", dataDir)
				}
				dataDir = filepath.Clean(dataDir)
			}
			set, err := parseSettings(settings)
			if err != nil {
				return err
			}
			d, err := dsn("", dsnFile, "")
			if err != nil {
				return err
			}
			if d == "" {
				return fmt.Errorf("--dsn-file %s is empty; write the database's connection string into it", dsnFile)
			}
			tlsCfg, err := agent.ServerTLS(agent.TLSFiles{Cert: certFile, Key: keyFile, CA: caFile}, nil, allowed, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			host, eng, r, err := e.openEngineAndRepo(ctx, engine)
			if err != nil {
				return err
			}
			defer host.Close()
			defer r.Close()
			a, err := agent.New(agent.Config{EngineName: engine, Engine: eng, Repo: r, Target: api.Target{DSN: d, Settings: set}, DataDir: dataDir, Tags: tags,
				TLS: tlsCfg, Listen: listen, MetricsListen: metricsListen, Slot: slot, FlushInterval: flush,
				WindowInterval: window, MaxLease: maxLease, Logger: log, Version: buildVersion()})
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&engine, "engine", os.Getenv("AMBER_ENGINE"), "database engine plugin: postgres (env AMBER_ENGINE)")
	f.StringVar(&dsnFile, "dsn-file", os.Getenv("AMBER_DSN_FILE"), "file holding the database's connection string (env AMBER_DSN_FILE)")
	f.StringVar(&dataDir, "data-dir", os.Getenv("AMBER_DATA_DIR"), "the database's data directory, mounted read-only (postgres): physical backups read its files in parallel and reuse those unchanged since the previous backup of the same name; the sidecar must run as the database's user; empty: physical backups over the replication protocol (env AMBER_DATA_DIR)")
	f.StringVar(&credsDir, "credentials-dir", os.Getenv("AMBER_CREDENTIALS_DIR"), "directory of storage credentials, one file per variable (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, B2_APPLICATION_KEY_ID, ...), as a mounted Secret; the environment is the fallback (env AMBER_CREDENTIALS_DIR)")
	f.StringVar(&certFile, "tls-cert", os.Getenv("AMBER_TLS_CERT"), "the agent's certificate, PEM (env AMBER_TLS_CERT)")
	f.StringVar(&keyFile, "tls-key", os.Getenv("AMBER_TLS_KEY"), "the agent's private key, PEM (env AMBER_TLS_KEY)")
	f.StringVar(&caFile, "tls-ca", os.Getenv("AMBER_TLS_CA"), "CA certificate(s) that sign callers' client certificates, PEM (env AMBER_TLS_CA)")
	f.StringSliceVar(&allowed, "allowed-client", envList("AMBER_ALLOWED_CLIENTS"), "accept only client certificates with one of these names (CN, DNS or URI SAN); default: any the CA signed (env AMBER_ALLOWED_CLIENTS, comma-separated)")
	f.StringArrayVar(&settings, "setting", envList("AMBER_SETTINGS"), "engine setting of the database as key=value (repeatable), e.g. lineage=orders (mysql), lock_wait_seconds=30; the same as for amber backup/restore on it (env AMBER_SETTINGS, comma-separated)")
	f.StringVar(&listen, "listen", envOr("AMBER_LISTEN", ":9443"), "address of the agent API (env AMBER_LISTEN)")
	f.StringVar(&metricsListen, "metrics-listen", envOr("AMBER_METRICS_LISTEN", ":9090"), "address of /metrics, /healthz and /readyz; empty: none (env AMBER_METRICS_LISTEN)")
	f.StringVar(&slot, "slot", envOr("AMBER_SLOT", ""), "replication slot the archiver uses (PostgreSQL; empty: amber; other engines refuse it) (env AMBER_SLOT)")
	f.StringVar(&flushS, "flush-interval", envOr("AMBER_FLUSH_INTERVAL", "500ms"), "archiving makes log durable at least this often under load (env AMBER_FLUSH_INTERVAL)")
	f.StringVar(&windowS, "window-interval", envOr("AMBER_WINDOW_INTERVAL", "1m"), "how often the recoverable window is recomputed while archiving (env AMBER_WINDOW_INTERVAL)")
	f.StringVar(&leaseS, "max-lease", envOr("AMBER_MAX_LEASE", "1h"), "longest freeze lease granted at once (env AMBER_MAX_LEASE)")
	f.StringVar(&logLevel, "log-level", envOr("AMBER_LOG_LEVEL", "info"), "debug, info, warn or error; logs are JSON on stderr (env AMBER_LOG_LEVEL)")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envList(name string) []string {
	var out []string
	for _, s := range strings.Split(os.Getenv(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func parseDur(flag, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usagef("%s %q is not a duration such as 500ms, 30s or 1m", flag, s)
	}
	return d, nil
}

// buildVersion is the module version and VCS revision stamped in the binary.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
