package workload

import (
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

func TestParsePostgresPosition(t *testing.T) {
	for _, tt := range []struct {
		text   string
		epoch  uint32
		offset uint64
		ok     bool
	}{
		{"0/3000060", 0, 0x3000060, true},
		{"2/1/A0", 2, 1<<32 | 0xA0, true},
		{" 1/0/C8 ", 1, 0xC8, true},
		{"0/ZZ", 0, 0, false},
		{"0/3000060/1/2", 0, 0, false},
		{"0/1/2", 0, 0, false}, // timeline 0
		{"mysql-bin.000003:2542", 0, 0, false},
	} {
		p, ok := ParsePostgresPosition(tt.text)
		if ok != tt.ok || (ok && (p.Epoch != tt.epoch || p.Offset != tt.offset)) {
			t.Errorf("%q: %+v %v; want epoch %d offset %#x ok %v", tt.text, p, ok, tt.epoch, tt.offset, tt.ok)
		}
	}
}

// TestChooseBases: only physical and snapshot backups of the StatefulSet
// and engine, consistent at or before the target, newest first; a
// snapshot backup needs archived log from its start (it holds none of its
// own), a physical one from its consistent point.
func TestChooseBases(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 22, 0, 0, 0, time.UTC)
	pos := func(off uint64) repo.LogPosition { return repo.LogPosition{Epoch: 1, Offset: off} }
	m := func(id byte, name, mode string, at time.Duration, start, consistent uint64) *repo.Manifest {
		x := &repo.Manifest{Name: name, Engine: "postgres", Mode: mode, ConsistentTime: t0.Add(at),
			Record: &repo.EngineRecord{SystemID: "7", Start: pos(start), Consistent: pos(consistent)}}
		x.ID[0] = id
		return x
	}
	all := []*repo.Manifest{
		m(1, "shop/pg", "physical", 0, 0x100, 0x200),
		m(2, "shop/pg", repo.ModeSnapshot, 10*time.Minute, 0x300, 0x400),
		m(3, "shop/pg", repo.ModeSnapshot, 20*time.Minute, 0x050, 0x600), // frozen before the archive starts
		m(4, "shop/pg", "logical", 25*time.Minute, 0x700, 0x700),
		m(5, "shop/other", "physical", 26*time.Minute, 0x700, 0x700),
		m(6, "shop/pg", "physical", 2*time.Hour, 0x900, 0x900), // after every target
	}
	cov := &archive.Coverage{Ranges: []archive.Range{{Epoch: 1, Start: 0x100, End: 0x1000, EndText: "0/1000", LastTime: t0.Add(time.Hour)}}}
	cover := func(stream string) (*archive.Coverage, error) {
		if stream != "postgres-7" {
			t.Fatalf("stream %q", stream)
		}
		return cov, nil
	}
	got, err := ChooseBases(all, "shop/pg", "postgres", BaseTarget{Time: t0.Add(30 * time.Minute)}, cover)
	if err != nil {
		t.Fatal(err)
	}
	var ids []byte
	for _, b := range got {
		ids = append(ids, b.Backup.ID[0])
	}
	if string(ids) != "\x03\x02\x01" {
		t.Fatalf("bases %v; want backups 3, 2, 1", ids)
	}
	if !strings.Contains(got[0].Problem, "does not hold its start") || got[1].Problem != "" || got[2].Problem != "" {
		t.Fatalf("problems %q, %q, %q; want only the first (frozen before the archive) unusable", got[0].Problem, got[1].Problem, got[2].Problem)
	}
	// Past the log's last commit: none reaches.
	got, _ = ChooseBases(all, "shop/pg", "postgres", BaseTarget{Time: t0.Add(90 * time.Minute)}, cover)
	for _, b := range got {
		if b.Problem == "" {
			t.Errorf("backup %d reaches a target after the archive's last commit", b.Backup.ID[0])
		}
	}
	// A position: offsets compare when it names no timeline.
	got, _ = ChooseBases(all, "shop/pg", "postgres", BaseTarget{Position: "0/450"}, cover)
	if len(got) != 2 || got[0].Backup.ID[0] != 2 || got[0].Problem != "" {
		t.Fatalf("bases for position 0/450: %+v", got)
	}
	got, _ = ChooseBases(all, "shop/pg", "postgres", BaseTarget{Position: "0/2000"}, cover)
	if len(got) == 0 || !strings.Contains(got[0].Problem, "before the target position") {
		t.Fatalf("bases for a position past the log: %+v", got)
	}
}
