package pluginhost

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newLogBridge returns the hclog.Logger go-plugin writes to: it parses the
// plugins' JSON stderr lines (@level, @message, fields) and logs them, and
// its own messages, through l with a "plugin" attribute naming the binary.
func newLogBridge(l *slog.Logger) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "pluginhost",
		Level:  hclog.Trace,
		Output: io.Discard,
	})
	il.RegisterSink(&slogSink{l: l})
	return il
}

type slogSink struct{ l *slog.Logger }

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	lvl := slogLevel(level)
	ctx := context.Background()
	if !s.l.Enabled(ctx, lvl) {
		return
	}
	// go-plugin names a plugin's logger "<ours>.<binary>".
	attrs := []slog.Attr{}
	if _, plugin, ok := strings.Cut(name, "."); ok {
		attrs = append(attrs, slog.String("plugin", plugin))
	}
	for i := 0; i+1 < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		if key == "timestamp" {
			continue
		}
		attrs = append(attrs, slog.Any(key, args[i+1]))
	}
	r := slog.NewRecord(time.Now(), lvl, msg, 0)
	r.AddAttrs(attrs...)
	_ = s.l.Handler().Handle(ctx, r)
}
