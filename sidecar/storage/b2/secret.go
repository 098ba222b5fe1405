package b2

import (
	"fmt"
	"log/slog"
)

// Secret holds a credential. It prints as *** with every fmt verb, in Go
// syntax (%#v) and through log/slog, so a Config can be logged whole without
// leaking the key. Convert it with string(s) where the value is really needed.
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
