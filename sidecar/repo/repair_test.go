package repo

import (
	"context"
	"errors"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
)

// TestRepairIndex: with index files lost or damaged, prune refuses; repair
// rebuilds the index from the packs; then prune runs and everything restores.
func TestRepairIndex(t *testing.T) {
	for _, damage := range []string{"deleted", "truncated"} {
		t.Run(damage, func(t *testing.T) {
			tr := newTestRepo(t, Options{})
			ctx := context.Background()
			for i := range 3 {
				backup(t, tr.Repository, pseudoRandom(uint64(200+i), 3<<20))
			}
			idx := tr.names(t, indexDir)
			for _, n := range idx[:2] {
				if damage == "deleted" {
					if err := tr.be.Remove(ctx, n); err != nil {
						t.Fatal(err)
					}
				} else {
					b, _ := storage.ReadAll(ctx, tr.be, n)
					put(t, tr.be, n, b[:len(b)-9])
				}
			}
			if _, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{}); !errors.Is(err, ErrLostIndex) {
				t.Fatalf("prune with a lost index: %v", err)
			}
			res, err := tr.reopen(t, Options{}).RepairIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.PacksIndexed == 0 || len(res.Problems) != 0 || (damage == "truncated" && len(res.IndexRemoved) != 2) {
				t.Fatalf("repair: %+v", res)
			}
			r := tr.reopen(t, Options{})
			if _, err := r.Prune(ctx, PrunePolicy{}); err != nil {
				t.Fatalf("prune after repair: %v", err)
			}
			rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil || !rep.OK() {
				t.Fatalf("verify after repair: %v %+v", err, rep)
			}
			all, _ := r.Backups(ctx)
			if len(all) != 3 {
				t.Fatalf("%d backups after repair", len(all))
			}
			checkListedRestore(t, r, nil)
			for i, m := range all {
				if got := restore(t, r, m); string(got) != string(pseudoRandom(uint64(200+i), 3<<20)) {
					t.Fatalf("backup %d differs after repair", i)
				}
			}
		})
	}
}
