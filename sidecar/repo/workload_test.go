package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A workload is stored encrypted beside its backup, listed back whole, and
// removed by prune together with its backup.
func TestWorkloadSavedListedPruned(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	first := backup(t, r, pseudoRandom(1, 1<<16))
	time.Sleep(10 * time.Millisecond)
	second := backup(t, r, pseudoRandom(2, 1<<16))
	secret := `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"k":"dG9wLXNlY3JldC12YWx1ZQ=="}}`
	for i, m := range []*Manifest{first, second} {
		w := &Workload{Backup: m.ID, Kind: "kubernetes", Namespace: "shop", Name: "pg", Engine: "postgres",
			Captured: time.Date(2026, 11, 28, 10, i, 0, 0, time.UTC), Objects: []json.RawMessage{json.RawMessage(secret)}}
		if _, err := r.SaveWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.SaveWorkload(ctx, &Workload{Backup: ID{1}}); err == nil {
		t.Fatal("a workload of a backup that does not exist was saved")
	}
	names, err := listNames(ctx, be, workloadsDir)
	if err != nil || len(names) != 2 {
		t.Fatalf("workloads/ holds %v (%v), want 2 objects", names, err)
	}
	for _, n := range names {
		var buf bytes.Buffer
		rc, err := be.Load(ctx, n, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf.ReadFrom(rc)
		rc.Close()
		if strings.Contains(buf.String(), "dG9wLXNlY3JldC12YWx1ZQ") || strings.Contains(buf.String(), "Secret") {
			t.Fatalf("%s holds the Secret in the clear", n)
		}
	}
	ws, err := r.Workloads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 || ws[0].Backup != first.ID || ws[1].Backup != second.ID || ws[1].Namespace != "shop" || string(ws[1].Objects[0]) != secret {
		t.Fatalf("Workloads: %+v", ws)
	}
	vr, err := r.Verify(ctx, VerifyOptions{})
	if err != nil || !vr.OK() || vr.Workloads != 2 {
		t.Fatalf("verify: %+v %v", vr, err)
	}
	res, err := r.Prune(ctx, PrunePolicy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Workloads != 1 {
		t.Fatalf("prune removed %d workloads, want 1", res.Workloads)
	}
	ws, err = r.Workloads(ctx)
	if err != nil || len(ws) != 1 || ws[0].Backup != second.ID {
		t.Fatalf("after prune: %+v, %v; want the second backup's workload", ws, err)
	}
	// A damaged workload is named by verify.
	names, _ = listNames(ctx, be, workloadsDir)
	if err := be.Save(ctx, names[0], bytes.NewReader([]byte("garbage")), 7); err != nil {
		t.Fatal(err)
	}
	vr, err = r.Verify(ctx, VerifyOptions{})
	if err != nil || vr.OK() || vr.Problems[0].Object != names[0] {
		t.Fatalf("verify of a damaged workload: %+v %v", vr, err)
	}
}
