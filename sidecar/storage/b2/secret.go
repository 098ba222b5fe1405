package b2

import (
	"fmt"
	"log/slog"
)

// Secret holds a credential. It prints as *** with every fmt verb (also
// inside structs, maps and pointers, and in Go syntax with %#v), through
// log/slog's text and JSON handlers, encoding/json and
// encoding.TextMarshaler, so a Config can be logged whole without leaking
// the key. Convert it with string(s) where the value is really needed.
//
// A Secret never round-trips through JSON: it marshals to "***".
type Secret string

const redacted = "***"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter, so that verbs such as %d or %x do not fall
// back to printing the underlying string.
func (Secret) Format(f fmt.State, _ rune) { f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler: always "***".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler: always "***".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
