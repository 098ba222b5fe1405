package api_test

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/amber-backup/amber/plugins/api"
)

// TestSecretRedactedEverywhere prints a Secret, alone and inside a struct and
// a map, through every path a value takes to a log or a wire: fmt verbs,
// encoding/json, slog's text and JSON handlers and encoding.TextMarshaler.
func TestSecretRedactedEverywhere(t *testing.T) {
	const pw = "hunter2"
	s := api.Secret("postgres://u:" + pw + "@h/db")
	tg := api.Target{DSN: s, DataDir: "/data"}
	holder := struct {
		Name   string
		Target api.Target
		Ptr    *api.Secret
		Map    map[string]api.Secret
	}{"x", tg, &s, map[string]api.Secret{"dsn": s}}

	var outs []string
	for _, v := range []any{s, tg, holder, &holder, map[string]any{"t": tg}} {
		outs = append(outs, fmt.Sprintf("%v|%s|%q|%+v|%#v|%x|%X|%d", v, v, v, v, v, v, v, v))
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		outs = append(outs, string(b))
	}
	if b, _ := json.Marshal(s); string(b) != `"***"` {
		t.Errorf("json of a Secret = %s, want \"***\"", b)
	}
	var tm encoding.TextMarshaler = s
	txt, err := tm.MarshalText()
	if err != nil || string(txt) != "***" {
		t.Errorf("MarshalText = %q, %v; want ***", txt, err)
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("m", "dsn", s, "target", tg, "holder", holder, slog.Any("any", s))
		outs = append(outs, buf.String())
	}
	for _, out := range outs {
		if strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) || strings.Contains(out, fmt.Sprintf("%X", pw)) {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if string(s) != "postgres://u:"+pw+"@h/db" {
		t.Error("conversion to string lost the value")
	}
}
