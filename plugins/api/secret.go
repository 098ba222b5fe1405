package api

import (
	"fmt"
	"log/slog"
)

// Secret is a string that never prints. Every path a value takes to a log,
// an error or a wire format gives "***": fmt with any verb (%v %s %q %+v %#v
// %x ..., also inside structs, maps and pointers), encoding/json
// (MarshalJSON), encoding.TextMarshaler (so also JSON map keys and YAML-like
// encoders), and log/slog's text and JSON handlers (LogValue). Use string(s)
// where the value itself is needed, as targetToPB does to carry a DSN over
// gRPC.
//
// A Secret never round-trips through JSON: it marshals to "***", and
// unmarshalling that gives the literal "***". Do not store or send a Secret
// as JSON.
type Secret string

const redacted = "***"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter, so that no verb (%x, %d, %q ...) falls
// back to the underlying string.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler: always "***".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler: always "***".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
