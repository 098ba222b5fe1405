package app

import (
	"log/slog"

	"github.com/go-logr/logr"
)

// toLogr adapts slog for controller-runtime's own logging.
func toLogr(l *slog.Logger) logr.Logger { return logr.FromSlogHandler(l.Handler()) }
