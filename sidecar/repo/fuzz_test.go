package repo

import "testing"

// FuzzPackHeader feeds arbitrary bytes to the pack parser: it must never
// panic, and whatever it accepts must lie inside the pack.
func FuzzPackHeader(f *testing.F) {
	var key MasterKey
	s, _ := newSealer(key.Encrypt[:])
	var pb packBuilder
	pb.add(BlobInfo{ID: ID{1}, RawLength: 3}, s.seal(nil, []byte("abc"), blobAD(ID{1}, DataBlob)))
	pack, _, _ := pb.finish(s)
	f.Add(pack)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		blobs, err := parsePackHeader(s, data)
		if err != nil {
			return
		}
		for _, b := range blobs {
			if int(b.Offset)+int(b.Length) > len(data) {
				t.Fatalf("blob %v lies outside the %d-byte pack", b, len(data))
			}
		}
	})
}

// FuzzSegmentName checks that parsing segment names never panics and that
// what parses prints back to the same name.
func FuzzSegmentName(f *testing.F) {
	f.Add("log/pg/00000001/0000000001000000-0000000002000000")
	f.Add("log/pg/00000001/0000000001000000-0000000001800000.partial")
	f.Add("log/x/y/z")
	f.Fuzz(func(t *testing.T, name string) {
		s, ok := parseSegmentName(name)
		if !ok || !streamRE.MatchString(s.Stream) {
			return
		}
		if again, ok := parseSegmentName(s.ObjectName()); !ok || again.ObjectName() != name {
			t.Fatalf("%q parsed as %+v, which prints as %q", name, s, s.ObjectName())
		}
	})
}
