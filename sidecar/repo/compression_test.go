package repo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCompressionLevels: each level is applied to the data a writer stores,
// and any client restores it byte for byte without knowing the level.
func TestCompressionLevels(t *testing.T) {
	ctx := context.Background()
	var data bytes.Buffer
	for i := 0; data.Len() < 4<<20; i++ {
		fmt.Fprintf(&data, "%d\t2024-01-%02d 10:%02d:00\tuser%d@example.com\t%x\n", i, i%28+1, i%60, i*7919%1000003, i*2654435761)
	}
	stored := map[Compression]int64{}
	for _, c := range []Compression{CompressFastest, CompressDefault, CompressBetter} {
		tr := newTestRepo(t, Options{Compression: c})
		w, err := tr.NewWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e := writeUploaded(t, w, "dump", data.Bytes())
		if _, err := w.Commit(ctx, &Manifest{Name: "dump", Start: time.Now(), Entries: []Entry{e}}); err != nil {
			t.Fatal(err)
		}
		checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"dump": data.Bytes()})
		err = filepath.Walk(filepath.Join(tr.dir, dataDir), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				stored[c] += fi.Size()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stored bytes for %d: fastest %d, default %d, better %d", data.Len(), stored[CompressFastest], stored[CompressDefault], stored[CompressBetter])
	// Which level is smallest depends on the data (on this one, text with
	// random hex digits, zstd's higher levels lose); that each level is
	// applied does not.
	if stored[CompressDefault] == stored[CompressFastest] || stored[CompressBetter] == stored[CompressFastest] ||
		stored[CompressBetter] == stored[CompressDefault] {
		t.Fatalf("the levels were not applied: %v", stored)
	}
	if stored[CompressFastest] >= int64(data.Len())/2 {
		t.Fatalf("fastest stored %d of %d bytes: not compressed", stored[CompressFastest], data.Len())
	}
	for _, s := range []string{"", "fastest", "default", "better", "s2"} {
		if _, err := ParseCompression(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseCompression("max"); err == nil {
		t.Fatal("an unknown level was accepted")
	}
}
