package chunker

import (
	"bytes"
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
