package api

import (
	"context"
	"log/slog"
	"slices"

	"github.com/hashicorp/go-hclog"
)

// HCLogHandler is a slog.Handler writing through an hclog.Logger. In a
// plugin, Serve installs it as slog's default over hclog's JSON output on
// stderr, which go-plugin's host parses (@level, @message) and relays.
type HCLogHandler struct {
	l      hclog.Logger
	attrs  []any
	groups []string
}

// NewHCLogHandler returns a slog.Handler that logs through l.
func NewHCLogHandler(l hclog.Logger) *HCLogHandler { return &HCLogHandler{l: l} }

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l < slog.LevelDebug:
		return hclog.Trace
	case l < slog.LevelInfo:
		return hclog.Debug
	case l < slog.LevelWarn:
		return hclog.Info
	case l < slog.LevelError:
		return hclog.Warn
	}
	return hclog.Error
}

func (h *HCLogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.l.GetLevel() <= hclogLevel(l)
}

func (h *HCLogHandler) Handle(_ context.Context, r slog.Record) error {
	args := slices.Clone(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		args = appendAttr(args, h.groups, a)
		return true
	})
	h.l.Log(hclogLevel(r.Level), r.Message, args...)
	return nil
}

func appendAttr(args []any, groups []string, a slog.Attr) []any {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		g := groups
		if a.Key != "" {
			g = append(slices.Clone(groups), a.Key)
		}
		for _, b := range a.Value.Group() {
			args = appendAttr(args, g, b)
		}
		return args
	}
	if a.Key == "" {
		return args
	}
	key := a.Key
	for i := len(groups) - 1; i >= 0; i-- {
		key = groups[i] + "." + key
	}
	return append(args, key, a.Value.Any())
}

func (h *HCLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		n.attrs = appendAttr(n.attrs, h.groups, a)
	}
	return &n
}

func (h *HCLogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.groups = append(slices.Clone(h.groups), name)
	return &n
}
