package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"testing"
)

func data(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}

func chunks(t testing.TB, in []byte, tab *Table) []int {
	c, err := New(bytes.NewReader(in), tab, Params{Min: 64 << 10, Avg: 256 << 10, Max: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for {
		ch, err := c.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, len(ch))
	}
}

func TestDeterministicAndResync(t *testing.T) {
	in := data(64 << 20)
	tab := NewTable([]byte("k"))
	a, b := chunks(t, in, tab), chunks(t, in, tab)
	if len(a) != len(b) {
		t.Fatal("same input cut differently")
	}
	total := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same input cut differently")
		}
		total += a[i]
	}
	if total != len(in) {
		t.Fatalf("chunks cover %d of %d bytes", total, len(in))
	}
	avg := len(in) / len(a)
	if avg < 150<<10 || avg > 450<<10 {
		t.Fatalf("average chunk %d bytes, want about 256 KiB", avg)
	}
	// Another key cuts elsewhere.
	if c := chunks(t, in, NewTable([]byte("other"))); len(c) == len(a) && c[0] == a[0] {
		t.Fatal("the key does not change the boundaries")
	}
	// Inserting bytes near the start only changes the chunks around them.
	ins := append(append(append([]byte{}, in[:1000]...), []byte("inserted")...), in[1000:]...)
	c := chunks(t, ins, tab)
	same := 0
	set := map[int]int{}
	for _, x := range a {
		set[x]++
	}
	for _, x := range c {
		if set[x] > 0 {
			set[x]--
			same++
		}
	}
	if same < len(a)-3 {
		t.Fatalf("only %d of %d chunks survived an insertion", same, len(a))
	}
}

func BenchmarkChunker(b *testing.B) {
	in := data(64 << 20)
	tab := NewTable([]byte("k"))
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		chunks(b, in, tab)
	}
}

// gapped returns n random bytes with a run of zeros (which forces cuts at
// Max) in the middle.
func gapped(n int) []byte {
	in := data(n)
	for i := 1 << 20; i < 3<<20+5; i++ {
		in[i] = 0
	}
	return in
}

var golden = []struct {
	p     Params
	n     int
	sizes string // SHA-256 of the chunk lengths, uint32 little endian
}{
	{Params{Min: 64 << 10, Avg: 256 << 10, Max: 2 << 20}, 51, "4454c7361ada33ad1a7f43dd2662d630a8e2f98be8e49ccdff51bef12dd3a278"},
	{Params{Min: 64, Avg: 256, Max: 1024}, 52264, "98d506785eb1a5e1bdbd9a70a8bff9dc5fd27b153c71045a07901ad028bb2ed2"},
	{Params{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}, 3257, "bb984be0defc85939ebb772d5a0620ab07bde36f0a7d3217f72a98b4d821aa44"},
}

func sizesHash(sizes []int) string {
	h := sha256.New()
	for _, n := range sizes {
		_ = binary.Write(h, binary.LittleEndian, uint32(n))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestGolden pins the boundaries: existing repositories deduplicate
// against chunks cut this way, so a change here must not move any.
func TestGolden(t *testing.T) {
	in := gapped(16 << 20)
	for _, g := range golden {
		c, err := New(bytes.NewReader(in), NewTable([]byte("golden")), g.p)
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for {
			ch, err := c.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(ch))
		}
		if len(sizes) != g.n || sizesHash(sizes) != g.sizes {
			t.Errorf("%+v: %d chunks (hash %s), want %d (%s)", g.p, len(sizes), sizesHash(sizes), g.n, g.sizes)
		}
	}
}

// TestCutInPieces offers Cut the stream in random pieces, as the writer
// does when bytes arrive from a pipe, and expects Next's chunks.
func TestCutInPieces(t *testing.T) {
	in := gapped(16 << 20)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, g := range golden {
		c, err := New(nil, NewTable([]byte("golden")), g.p)
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		start, end := 0, 0
		for start < len(in) {
			n, ok := c.Cut(in[start:end], end == len(in))
			if !ok {
				end = min(end+1+rng.IntN(2*g.p.Avg), len(in))
				continue
			}
			sizes = append(sizes, n)
			start += n
		}
		if len(sizes) != g.n || sizesHash(sizes) != g.sizes {
			t.Errorf("%+v: %d chunks (hash %s), want %d (%s)", g.p, len(sizes), sizesHash(sizes), g.n, g.sizes)
		}
	}
}

// BenchmarkCut is the rolling hash alone: Cut over a stream in memory, as
// the writer cuts slabs, without Next's copies.
func BenchmarkCut(b *testing.B) {
	in := data(64 << 20)
	c, err := New(nil, NewTable([]byte("k")), Params{Min: 64 << 10, Avg: 256 << 10, Max: 2 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		for rest := in; len(rest) > 0; {
			n, _ := c.Cut(rest, true)
			rest = rest[n:]
		}
	}
}
