package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"google.golang.org/grpc/codes"
)

// Plugin is one engine's plugin as the host sees it. It implements
// api.Engine; each call goes to the live plugin process, relaunching it if
// it died since the last call.
type Plugin struct {
	host *Host
	name string
}

var _ api.Engine = (*Plugin)(nil)

// Name is the engine name.
func (p *Plugin) Name() string { return p.name }

func (p *Plugin) get(ctx context.Context) (*instance, error) {
	return p.host.instance(ctx, p.name)
}

// exited reports whether the plugin process died. A broken connection
// (gRPC Unavailable) is usually seen before the process exit is, so then
// it waits a little for the exit.
func exited(in *instance, err error) bool {
	if in.client.Exited() {
		return true
	}
	// Under load the failed call may be seen well before go-plugin reaps
	// the process; the kernel already knows it is dead (gone or a zombie).
	if rc := in.client.ReattachConfig(); rc != nil && processGone(rc.Pid) {
		in.client.Kill() // reap it, so the next call starts a new one
		return true
	}
	var re *api.RemoteError
	if !errors.As(err, &re) || re.Code != codes.Unavailable {
		return false
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if in.client.Exited() {
			return true
		}
	}
	return false
}

// ErrExited is wrapped by errors of calls during which the plugin process
// died; the next call starts it again.
var ErrExited = errors.New("plugin process exited")

// ErrStart is wrapped by errors of a plugin process that did not come up
// (it died or was killed during the handshake).
var ErrStart = errors.New("plugin did not start")

// wrap names the plugin in err, and says so when its process died.
func wrap(in *instance, call string, err error) error {
	if err == nil {
		return nil
	}
	if exited(in, err) {
		return fmt.Errorf("plugin %s exited during %s (it is restarted on next use): %w: %w", filepath.Base(in.path), call, ErrExited, err)
	}
	return fmt.Errorf("%s %s: %w", in.name, call, err)
}

func (p *Plugin) Info(ctx context.Context) (api.Info, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.Info{}, err
	}
	info, err := in.engine.Info(ctx)
	return info, wrap(in, "info", err)
}

func (p *Plugin) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.Probe{}, err
	}
	r, err := in.engine.Probe(ctx, t)
	return r, wrap(in, "probe", err)
}

func (p *Plugin) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.BackupResult{}, err
	}
	r, err := in.engine.LogicalDump(ctx, req, sink)
	return r, wrap(in, "logical dump", err)
}

func (p *Plugin) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.RestoreResult{}, err
	}
	r, err := in.engine.LogicalRestore(ctx, req, src)
	return r, wrap(in, "logical restore", err)
}

func (p *Plugin) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.BackupResult{}, err
	}
	r, err := in.engine.PhysicalBackup(ctx, req, sink)
	return r, wrap(in, "physical backup", err)
}

func (p *Plugin) PhysicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.RestoreResult{}, err
	}
	r, err := in.engine.PhysicalRestore(ctx, req, src)
	return r, wrap(in, "physical restore", err)
}

func (p *Plugin) Freeze(ctx context.Context, req api.FreezeRequest) (api.Frozen, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.Frozen{}, err
	}
	r, err := in.engine.Freeze(ctx, req)
	return r, wrap(in, "freeze", err)
}

// RenewLease extends a freeze lease; see api.Client.RenewLease.
func (p *Plugin) RenewLease(ctx context.Context, leaseID string, d time.Duration) (time.Time, error) {
	in, err := p.get(ctx)
	if err != nil {
		return time.Time{}, err
	}
	t, err := in.engine.RenewLease(ctx, leaseID, d)
	return t, wrap(in, "renew lease", err)
}

func (p *Plugin) Thaw(ctx context.Context, leaseID string) (api.Thawed, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.Thawed{}, err
	}
	r, err := in.engine.Thaw(ctx, leaseID)
	return r, wrap(in, "thaw", err)
}

func (p *Plugin) Archive(ctx context.Context, req api.ArchiveRequest, out api.SegmentSink, durable <-chan api.Position) error {
	in, err := p.get(ctx)
	if err != nil {
		return err
	}
	return wrap(in, "archive", in.engine.Archive(ctx, req, out, durable))
}

func (p *Plugin) Replay(ctx context.Context, req api.ReplayRequest, src api.SegmentSource) (api.ReplayResult, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.ReplayResult{}, err
	}
	r, err := in.engine.Replay(ctx, req, src)
	return r, wrap(in, "replay", err)
}

func (p *Plugin) ParsePosition(ctx context.Context, text string) (api.Position, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.Position{}, err
	}
	r, err := in.engine.ParsePosition(ctx, text)
	return r, wrap(in, "parse position", err)
}

func (p *Plugin) DescribeLogFile(ctx context.Context, q api.LogFileQuery) (api.LogFile, error) {
	in, err := p.get(ctx)
	if err != nil {
		return api.LogFile{}, err
	}
	r, err := in.engine.DescribeLogFile(ctx, q)
	return r, wrap(in, "describe log file", err)
}

// processGone reports whether pid has exited: no such process, or a zombie
// waiting to be reaped (Linux /proc; elsewhere it says false).
func processGone(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return runtime.GOOS == "linux"
	}
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state == 'Z' || state == 'X'
}
