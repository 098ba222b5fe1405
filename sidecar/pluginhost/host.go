package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/hashicorp/go-plugin"
)

// Prefix is the file name prefix of engine plugins: amber-plugin-<engine>.
const Prefix = "amber-plugin-"

// EnvPluginDir names the environment variable holding the plugin directory.
const EnvPluginDir = "AMBER_PLUGIN_DIR"

// Options configure a Host.
type Options struct {
	// Dirs are searched in order for amber-plugin-<engine>. Empty: the
	// directory in $AMBER_PLUGIN_DIR, then the directory of the running
	// executable.
	Dirs []string
	// Logger receives the plugins' logs and the host's own. Nil: slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds a plugin's start and handshake. Zero: 30 s.
	StartTimeout time.Duration
}

// Host launches plugins on demand and keeps one process per engine. It
// relaunches a plugin whose process died on the next call. Close kills them.
type Host struct {
	dirs    []string
	log     *slog.Logger
	timeout time.Duration

	mu      sync.Mutex
	running map[string]*instance
	closed  bool
}

type instance struct {
	name   string
	path   string
	client *plugin.Client
	engine *api.Client
	info   api.Info
	pipes  *api.Pipes
}

// kill ends the plugin process and closes the host's end of its pipe socket.
func (in *instance) kill() {
	in.client.Kill()
	in.pipes.Close()
}

// New returns a Host. No plugin is started until Engine is called.
func New(o Options) *Host {
	h := &Host{dirs: o.Dirs, log: o.Logger, timeout: o.StartTimeout, running: map[string]*instance{}}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.timeout == 0 {
		h.timeout = 30 * time.Second
	}
	if len(h.dirs) == 0 {
		h.dirs = DefaultDirs()
	}
	return h
}

// DefaultDirs is $AMBER_PLUGIN_DIR (when set), then the directory of the
// running executable.
func DefaultDirs() []string {
	var dirs []string
	if d := os.Getenv(EnvPluginDir); d != "" {
		dirs = append(dirs, d)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	return dirs
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Find returns the path of amber-plugin-<engine>, or an error naming the
// engines that were found and where the host looked.
func (h *Host) Find(engine string) (string, error) {
	if validName.MatchString(engine) {
		for _, d := range h.dirs {
			p := filepath.Join(d, Prefix+engine)
			if isExecutable(p) {
				return p, nil
			}
		}
	}
	found := h.Available()
	list := "none"
	if len(found) > 0 {
		list = strings.Join(found, ", ")
	}
	return "", fmt.Errorf("unknown engine %q: no executable %s%s in %s (engines found: %s); install the plugin next to amber or set %s",
		engine, Prefix, engine, strings.Join(h.dirs, ", "), list, EnvPluginDir)
}

// Available lists the engines whose plugins are installed in the search
// directories.
func (h *Host) Available() []string {
	var out []string
	for _, d := range h.dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			name, ok := strings.CutPrefix(e.Name(), Prefix)
			if ok && validName.MatchString(name) && isExecutable(filepath.Join(d, e.Name())) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Engine returns the plugin for engine, starting it if needed. The
// returned Plugin stays valid across plugin restarts: each call goes to
// the live process, relaunching it when it died.
func (h *Host) Engine(ctx context.Context, engine string) (*Plugin, error) {
	if _, err := h.instance(ctx, engine); err != nil {
		return nil, err
	}
	return &Plugin{host: h, name: engine}, nil
}

// instance returns the live process for engine, launching it when there is
// none or the previous one exited.
func (h *Host) instance(ctx context.Context, engine string) (*instance, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("plugin host is closed")
	}
	if in := h.running[engine]; in != nil {
		if !in.client.Exited() {
			return in, nil
		}
		h.log.WarnContext(ctx, "plugin process died; restarting it", "plugin", filepath.Base(in.path), "engine", engine)
		in.kill()
		delete(h.running, engine)
	}
	in, err := h.launch(ctx, engine)
	if err != nil {
		return nil, err
	}
	h.running[engine] = in
	return in, nil
}

func (h *Host) launch(ctx context.Context, engine string) (*instance, error) {
	path, err := h.Find(engine)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(path)
	cmd := exec.Command(path)
	// On Linux the kernel also ends the plugin when amber dies (the plugin
	// itself watches its parent too, for the rare case this signal misses).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	level := "info"
	if h.log.Enabled(ctx, slog.LevelDebug) {
		level = "debug"
	}
	// The plugin gets an allowlisted environment, never the host's
	// credentials (see childEnvAllowed); SkipHostEnv stops go-plugin from
	// appending the whole of os.Environ() again.
	cmd.Env = pluginEnv(os.Environ(), "AMBER_PLUGIN_LOG_LEVEL="+level)
	// The plugin's end of the socket backup entries' pipes are passed over
	// (api.Pipes): the plugin's fd 3.
	pipes, child, err := api.NewPipes()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{child}
	cmd.Env = append(cmd.Env, api.EnvPipes+"=3")
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  api.Handshake,
		VersionedPlugins: api.VersionedPlugins(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           newLogBridge(h.log),
		StartTimeout:     h.timeout,
		SkipHostEnv:      true,
		Stderr:           io.Discard,
		GRPCDialOptions:  api.DialOptions(),
	})
	rpc, err := client.Client()
	child.Close() // the plugin has its own copy, or never started
	kill := func() {
		client.Kill()
		pipes.Close()
	}
	if err != nil {
		kill()
		if strings.Contains(err.Error(), "incompatible API version") {
			return nil, fmt.Errorf("plugin %s speaks no protocol version this amber knows (amber knows %d): %v; install the %s that comes with this amber",
				path, api.ProtocolVersion, err, base)
		}
		return nil, fmt.Errorf("start plugin %s: %w: %w", path, ErrStart, err)
	}
	raw, err := rpc.Dispense(api.PluginName)
	if err != nil {
		kill()
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	c, ok := raw.(*api.Client)
	if !ok {
		kill()
		return nil, fmt.Errorf("plugin %s: unexpected client type %T", path, raw)
	}
	info, err := c.Info(ctx)
	if err != nil {
		kill()
		return nil, fmt.Errorf("plugin %s: info: %w", path, err)
	}
	c.UsePipes(pipes, info.ReadsPipes)
	if info.Engine != engine {
		kill()
		return nil, fmt.Errorf("plugin %s says it is engine %q, not %q; reinstall it", path, info.Engine, engine)
	}
	h.log.DebugContext(ctx, "plugin started", "plugin", base, "engine", engine, "version", info.PluginVersion,
		"protocol", client.NegotiatedVersion(), "capabilities", fmt.Sprint(info.Capabilities))
	return &instance{name: engine, path: path, client: client, engine: c, info: info, pipes: pipes}, nil
}

// Close kills every plugin process. The Host cannot be used afterwards.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for name, in := range h.running {
		in.kill()
		delete(h.running, name)
	}
	return nil
}

// pid returns the process id of the running plugin for engine, or 0.
func (h *Host) pid(engine string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if in := h.running[engine]; in != nil {
		if rc := in.client.ReattachConfig(); rc != nil {
			return rc.Pid
		}
	}
	return 0
}
