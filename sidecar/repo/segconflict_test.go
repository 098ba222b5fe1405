package repo

import (
	"context"
	"errors"
	"testing"
)

// A complete log segment is written once: the same log again is accepted
// (an archiver that restarts), different log under the same name (a second
// server in one stream) is refused and the first stays; partial segments
// are superseded by design.
func TestCompleteSegmentNeverOverwritten(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t, Options{})
	seg := Segment{Stream: "pg-1", Epoch: 1, Start: 0x1000, End: 0x2000, Name: "000000010000000000000001"}
	first := []byte("log of the first server")
	if err := tr.PutSegment(ctx, seg, first); err != nil {
		t.Fatal(err)
	}
	if err := tr.PutSegment(ctx, seg, first); err != nil {
		t.Fatalf("the same segment again: %v", err)
	}
	err := tr.PutSegment(ctx, seg, []byte("log of another server!!"))
	if !errors.Is(err, ErrSegmentConflict) {
		t.Fatalf("different log under one name: %v, want ErrSegmentConflict", err)
	}
	if _, got, err := tr.GetSegment(ctx, seg.ObjectName()); err != nil || string(got) != string(first) {
		t.Fatalf("after the refused write the segment holds %q (%v), want the first server's", got, err)
	}
	partial := seg
	partial.Partial = true
	for _, data := range []string{"a", "ab"} {
		if err := tr.PutSegment(ctx, partial, []byte(data)); err != nil {
			t.Fatalf("partial segment rewritten: %v", err)
		}
	}
}
