package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Leaser renews freeze leases (pluginhost.Plugin does). An engine without
// it answers RenewLease with UNIMPLEMENTED.
type Leaser interface {
	RenewLease(ctx context.Context, leaseID string, d time.Duration) (time.Time, error)
}

// Config is what an agent needs. Repo and Engine are opened by the caller,
// which closes them after Run returns.
type Config struct {
	EngineName string            // "postgres"
	Engine     api.Engine        // the loaded plugin; RenewLease needs it to be a Leaser too
	Repo       *repo.Repository  // where backups and log go
	Target     api.Target        // the database: its DSN (from a file) and settings
	Tags       map[string]string // added to every backup (pod, namespace, ...)

	// DataDir is the database's data directory, mounted read-only into
	// the agent's container. With it, physical backups read the files
	// themselves, reusing the files unchanged since the previous backup
	// of the same name (engines with file records: PostgreSQL); empty:
	// physical backups go over the engine's network protocol.
	DataDir string

	TLS           *tls.Config // from ServerTLS; required
	Listen        string      // API address, "host:port"
	MetricsListen string      // metrics, /healthz and /readyz; empty: none

	Slot           string        // replication slot (archive option "slot"); empty: the plugin's default
	FlushInterval  time.Duration // archiving's default flush interval; 0: the engine's
	WindowInterval time.Duration // how often the window is recomputed; 0: one minute
	MaxLease       time.Duration // longest freeze lease granted at once; 0: one hour
	ProbeTimeout   time.Duration // /readyz's probe; 0: 5 s
	// ShutdownTimeout bounds how long calls still running at shutdown are
	// waited for after the archiver is durable; 0: 10 s.
	ShutdownTimeout time.Duration

	Clock   clock.Clock  // nil: the real clock
	Logger  *slog.Logger // nil: slog.Default()
	Version string       // reported by Status
}

// Agent serves the agent API and metrics for one database.
type Agent struct {
	cfg    Config
	clk    clock.Clock
	log    *slog.Logger
	jobLog *slog.Logger // without the engine, which jobs add
	grpc   *grpc.Server
	api    net.Listener
	mlis   net.Listener
	http   *http.Server
	m      *metrics

	// life ends at shutdown; backups run under it (and their call's context).
	life    context.Context
	endLife context.CancelFunc
	closing atomic.Bool
	calls   atomic.Int64 // calls that reached a handler

	arch *archiver
	win  *windowWatch

	mu         sync.Mutex
	started    time.Time
	backup     *runningBackup
	lastBackup *agentpb.BackupResult
	lastBkErr  *agentpb.ErrorRecord
	lastErr    *agentpb.ErrorRecord
	leases     map[string]*agentpb.Lease
	systemID   string
	pluginVer  string
}

type runningBackup struct {
	name, mode string
	started    time.Time
	done       atomic.Pointer[func() int64]
}

func (b *runningBackup) bytes() int64 {
	if f := b.done.Load(); f != nil {
		return (*f)()
	}
	return 0
}

// New checks cfg and listens on its addresses; nothing is served until Run.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Engine == nil || cfg.EngineName == "":
		return nil, errors.New("agent: no engine plugin")
	case cfg.Repo == nil:
		return nil, errors.New("agent: no repository")
	case cfg.Target.DSN == "":
		return nil, errors.New("the agent needs the database's connection string: give --dsn-file")
	case cfg.TLS == nil:
		return nil, errors.New("the agent API needs mutual TLS: give --tls-cert, --tls-key and --tls-ca")
	case cfg.Listen == "":
		return nil, errors.New("the agent needs an API address: give --listen")
	}
	if cfg.WindowInterval <= 0 {
		cfg.WindowInterval = time.Minute
	}
	if cfg.MaxLease <= 0 {
		cfg.MaxLease = time.Hour
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	a := &Agent{cfg: cfg, clk: clock.Or(cfg.Clock), log: cfg.Logger, leases: map[string]*agentpb.Lease{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	// Jobs add the engine to their logger themselves.
	a.life, a.endLife = context.WithCancel(job.WithLogger(context.Background(), a.log))
	a.jobLog, a.log = a.log, a.log.With("engine", cfg.EngineName)
	a.started = a.clk.Now()
	a.arch = &archiver{a: a}
	a.win = newWindowWatch(a)
	a.m = newMetrics(a)

	var err error
	if a.api, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("agent API: listen on %s: %w", cfg.Listen, err)
	}
	if cfg.MetricsListen != "" {
		if a.mlis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			a.api.Close()
			return nil, fmt.Errorf("agent metrics: listen on %s: %w", cfg.MetricsListen, err)
		}
		a.http = &http.Server{Handler: a.m.handler(), ReadHeaderTimeout: 10 * time.Second}
	}
	a.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.ConnectionTimeout(10*time.Second), // the TLS handshake, too
		grpc.ChainUnaryInterceptor(a.unaryGuard),
		grpc.ChainStreamInterceptor(a.streamGuard),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	agentpb.RegisterAgentServiceServer(a.grpc, &service{a: a})
	return a, nil
}

// Addr is the API's listening address.
func (a *Agent) Addr() net.Addr { return a.api.Addr() }

// MetricsAddr is the metrics listener's address (nil without one).
func (a *Agent) MetricsAddr() net.Addr {
	if a.mlis == nil {
		return nil
	}
	return a.mlis.Addr()
}

// Run serves until ctx ends, then shuts down: it stops accepting calls,
// cancels a running backup (which leaves nothing visible), stops archiving
// once everything received is durable, and returns. The error is the
// archiver's, if its last flush failed, or a listener's.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent serving", "api", a.Addr().String(), "metrics", fmt.Sprint(a.MetricsAddr()), "data_dir", a.cfg.DataDir)
	if a.cfg.DataDir != "" {
		// The database may not have created it yet; each backup checks again.
		if err := readableDir(a.cfg.DataDir); err != nil {
			a.log.Warn("physical backups will fail until the data directory is readable", "err", err)
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- a.grpc.Serve(a.api) }()
	if a.http != nil {
		go func() {
			if err := a.http.Serve(a.mlis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	go a.win.run(a.life)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		a.log.Error("agent API stopped", "err", serveErr)
	}
	return errors.Join(serveErr, a.shutdown())
}

// shutdown is the SIGTERM path.
func (a *Agent) shutdown() error {
	a.log.Info("agent shutting down: refusing new calls, making archived log durable")
	a.closing.Store(true)
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	a.endLife() // cancels a running backup and the window watcher
	_, err := a.arch.stop(context.Background())
	select {
	case <-stopped:
	case <-a.clk.After(a.cfg.ShutdownTimeout):
		a.log.Warn("calls still running at shutdown; closing their connections")
		a.grpc.Stop()
		<-stopped
	}
	if a.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = a.http.Shutdown(sctx)
		cancel()
	}
	if err != nil {
		return fmt.Errorf("stop archiving at shutdown: %w", err)
	}
	a.log.Info("agent stopped")
	return nil
}

// noteError records a failure for Status and the errors metric.
func (a *Agent) noteError(kind string, err error) *agentpb.ErrorRecord {
	rec := &agentpb.ErrorRecord{Kind: kind, Message: err.Error(), At: ts(a.clk.Now())}
	a.m.errors.WithLabelValues(kind).Inc()
	a.mu.Lock()
	a.lastErr = rec
	a.mu.Unlock()
	a.log.Warn("agent "+kind+" failed", "err", err)
	return rec
}
