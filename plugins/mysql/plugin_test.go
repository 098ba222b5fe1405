package mysql

import (
	"context"
	"strings"
	"testing"

	"github.com/amber-backup/amber/plugins/api"
)

func TestParsePosition(t *testing.T) {
	e := New()
	ctx := context.Background()
	for _, c := range []struct {
		in     string
		epoch  uint32
		offset uint64
	}{
		{"mysql-bin.000042:1532", 0, 42<<32 | 1532},
		{"2@mysql-bin.000042:1532", 2, 42<<32 | 1532},
		{"mysql-bin.000043:4 (0-1-1042)", 0, 43<<32 | 4},
	} {
		p, err := e.ParsePosition(ctx, c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if p.Epoch != c.epoch || p.Offset != c.offset || len(p.Token) == 0 || p.Text == "" {
			t.Errorf("%s: got epoch %d offset %#x token %q text %q, want epoch %d offset %#x", c.in, p.Epoch, p.Offset, p.Token, p.Text, c.epoch, c.offset)
		}
	}
	if _, err := e.ParsePosition(ctx, "0/3000060"); err == nil {
		t.Error("a PostgreSQL LSN parsed as a binlog position")
	}
	info, _ := e.Info(ctx)
	for _, c := range []api.Capability{api.LogicalDump, api.LogicalRestore, api.PhysicalBackup, api.PhysicalRestore,
		api.Freeze, api.Archive, api.Replay} {
		if !info.Has(c) {
			t.Errorf("Info does not declare %s", c)
		}
	}
	// Without log files the host applies archived log to a physical copy
	// through Replay (sidecar/job.RestoreEngine).
	if info.Has(api.LogFiles) {
		t.Error("Info declares capabilities the plugin lacks")
	}
}

// TestReplayFrom: a replay starts after a position given by its token, or,
// when it has none (a snapshot backup's position as the controller records
// it from the sidecar's Thaw answer: epoch, offset, text), by its text;
// both give the same position.
func TestReplayFrom(t *testing.T) {
	p, err := New().ParsePosition(context.Background(), "2@mysql-bin.000001:51443 (0-1-224)")
	if err != nil {
		t.Fatal(err)
	}
	byToken, err := replayFrom(p)
	if err != nil {
		t.Fatal(err)
	}
	byText, err := replayFrom(api.Position{Epoch: p.Epoch, Offset: p.Offset, Text: "mysql-bin.000001:51443 (0-1-224)"})
	if err != nil {
		t.Fatalf("a position without a token: %v", err)
	}
	if byText.File != "mysql-bin.000001" || byText.Pos != 51443 || byText.GTID != "0-1-224" || byText.Epoch != 2 ||
		byText.File != byToken.File || byText.Pos != byToken.Pos || byText.GTID != byToken.GTID || byText.Epoch != byToken.Epoch {
		t.Errorf("from the text %+v, from the token %+v; want mysql-bin.000001:51443 (0-1-224) in epoch 2 from both", byText, byToken)
	}
	if _, err := replayFrom(api.Position{Epoch: 1}); err == nil {
		t.Error("a position with neither token nor text was accepted")
	}
}

func TestLogicalRestoreOptions(t *testing.T) {
	e := New()
	for _, v := range []string{"0", "-1", "two"} {
		_, err := e.LogicalRestore(context.Background(), api.RestoreRequest{Options: map[string]string{"restore_threads": v}}, nil)
		if err == nil || !strings.Contains(err.Error(), "restore_threads") {
			t.Errorf("restore_threads=%s: %v, want the option named", v, err)
		}
	}
}

// TestUnknownOptionsRefused: a misspelt or foreign option fails the call
// before the server is asked anything, naming what the call takes.
func TestUnknownOptionsRefused(t *testing.T) {
	e, ctx := New(), context.Background()
	_, err := e.LogicalDump(ctx, api.BackupRequest{Options: map[string]string{"wokers": "2"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown option wokers for a logical backup: it takes only lock_wait_seconds, split_bytes, spool_dir, users, workers") {
		t.Errorf("LogicalDump: %v", err)
	}
	err = e.Archive(ctx, api.ArchiveRequest{Options: map[string]string{"slot": "amber"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown option slot for archiving: it takes only max_segment_bytes, server_id") {
		t.Errorf("Archive: %v", err)
	}
	_, err = e.PhysicalBackup(ctx, api.BackupRequest{Options: map[string]string{"workers": "2"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "it takes only parallel, tmp_dir") {
		t.Errorf("PhysicalBackup: %v", err)
	}
}
