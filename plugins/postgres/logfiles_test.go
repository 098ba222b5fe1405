package postgres

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/amber-backup/amber/plugins/api"
)

func TestParsePositionForms(t *testing.T) {
	e := New()
	for _, c := range []struct {
		in     string
		epoch  uint32
		offset uint64
		bad    bool
	}{
		{in: "0/3000060", offset: 0x3000060},
		{in: "2/0/3000060", epoch: 2, offset: 0x3000060},
		{in: " 1/A/0 ", epoch: 1, offset: 0xA00000000},
		{in: "0/3000060/1/2", bad: true},
		{in: "x/1", bad: true},
		{in: "0/1/1", bad: true}, // timeline 0 does not exist
		{in: "", bad: true},
	} {
		p, err := e.ParsePosition(context.Background(), c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q parsed as %+v", c.in, p)
			}
			continue
		}
		if err != nil || p.Epoch != c.epoch || p.Offset != c.offset {
			t.Errorf("%q = %+v, %v; want epoch %d offset %#x", c.in, p, err, c.epoch, c.offset)
		}
	}
}

func TestDescribeLogFile(t *testing.T) {
	ctx := context.Background()
	e := New()
	dir := t.TempDir()
	hist := filepath.Join(dir, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/5000B18\tno recovery target specified\n"), 0o600)
	wal := filepath.Join(dir, "000000020000000000000005")
	os.WriteFile(wal, make([]byte, 16<<20), 0o600)

	lf, err := e.DescribeLogFile(ctx, apiQuery("00000002.history", hist, 60, nil))
	if err != nil || lf.Segment.Start.Epoch != 2 || lf.Segment.Start.Offset != 0 || lf.Segment.End.Offset != 0 ||
		lf.Segment.Branch.Epoch != 1 || lf.Segment.Branch.Offset != 0x5000B18 {
		t.Fatalf("history: %+v, %v", lf, err)
	}
	lf, err = e.DescribeLogFile(ctx, apiQuery("000000020000000000000005", wal, 16<<20, nil))
	if err != nil || lf.Segment.Start.Epoch != 2 || lf.Segment.Start.Offset != 0x5000000 || lf.Segment.End.Offset != 0x6000000 ||
		lf.Segment.Partial || lf.Segment.FileSize != 16<<20 {
		t.Fatalf("wal: %+v, %v", lf, err)
	}
	// restore_command asks by name only; the segment size comes from the
	// setting the plugin put on the command line.
	lf, err = e.DescribeLogFile(ctx, apiQuery("000000010000000000000003", "", 0, map[string]string{SettingSegmentSize: "67108864"}))
	if err != nil || lf.Segment.Start.Offset != 3*64<<20 || lf.Segment.End.Offset != 4*64<<20 {
		t.Fatalf("by name with 64 MiB segments: %+v, %v", lf, err)
	}
	lf, err = e.DescribeLogFile(ctx, apiQuery("000000010000000000000003.00000028.backup", "", 0, nil))
	if err != nil || !lf.Ignore {
		t.Fatalf(".backup: %+v, %v", lf, err)
	}
	if _, err := e.DescribeLogFile(ctx, apiQuery("../../etc/passwd", "", 0, nil)); err == nil {
		t.Fatal("a name that is no WAL file was accepted")
	}
	short := filepath.Join(dir, "000000010000000000000009")
	os.WriteFile(short, make([]byte, 1000), 0o600)
	if _, err := e.DescribeLogFile(ctx, apiQuery("000000010000000000000009", short, 1000, nil)); err == nil {
		t.Fatal("a truncated WAL file was accepted")
	}
}

func apiQuery(name, path string, size int64, settings map[string]string) api.LogFileQuery {
	return api.LogFileQuery{Name: name, Path: path, Size: size, Settings: settings}
}
