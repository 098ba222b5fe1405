package b2_test

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage/b2"
)

// TestSecretRedactedEverywhere prints a Secret, alone and inside the Config,
// a struct and a map, through fmt's verbs, encoding/json, slog's text and
// JSON handlers and encoding.TextMarshaler.
func TestSecretRedactedEverywhere(t *testing.T) {
	const key = "K00hunter2secret"
	s := b2.Secret(key)
	cfg := b2.Config{Bucket: "b", Key: s}
	holder := struct {
		Cfg b2.Config
		Ptr *b2.Secret
		Map map[string]b2.Secret
	}{cfg, &s, map[string]b2.Secret{"k": s}}

	var outs []string
	for _, v := range []any{s, cfg, holder, &holder} {
		outs = append(outs, fmt.Sprintf("%v|%s|%q|%+v|%#v|%x|%X|%d", v, v, v, v, v, v, v, v))
	}
	// Config holds funcs and transports, which JSON cannot encode; a
	// struct and a map holding the Secret can.
	for _, v := range []any{s, &s, holder.Map, struct{ Key b2.Secret }{s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		outs = append(outs, string(b))
	}
	if b, _ := json.Marshal(s); string(b) != `"***"` {
		t.Errorf("json of a Secret = %s, want \"***\"", b)
	}
	if tm, ok := any(s).(encoding.TextMarshaler); !ok {
		t.Error("Secret does not implement encoding.TextMarshaler")
	} else if txt, err := tm.MarshalText(); err != nil || string(txt) != "***" {
		t.Errorf("MarshalText = %q, %v; want ***", txt, err)
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("m", "key", s, "config", cfg, "holder", holder)
		outs = append(outs, buf.String())
	}
	for _, out := range outs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", key)) || strings.Contains(out, fmt.Sprintf("%X", key)) {
			t.Errorf("secret leaked: %s", out)
		}
	}
}
