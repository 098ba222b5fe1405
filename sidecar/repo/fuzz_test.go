package repo

import (
	"bytes"
	"encoding/json"
	"testing"
)

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

// FuzzPackHeaderEntries fuzzes the pack header parser after decryption
// (the AEAD keeps FuzzPackHeader from reaching it): no panic, and every
// accepted blob lies inside the data.
func FuzzPackHeaderEntries(f *testing.F) {
	var e []byte
	e = append(e, 0, 1, 40, 0, 0, 0, 12, 0, 0, 0)
	e = append(e, make([]byte, 32)...)
	f.Add(e, int64(40))
	f.Add(append(bytes.Clone(e), e...), int64(80))
	s2e := bytes.Clone(e)
	s2e[1] = flagS2
	f.Add(s2e, int64(40))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		blobs, err := parseHeaderEntries(hdr, dataLen)
		if err != nil {
			return
		}
		for _, b := range blobs {
			if int64(b.Offset)+int64(b.Length) > dataLen {
				t.Fatalf("blob %+v lies outside %d data bytes", b, dataLen)
			}
		}
	})
}

// FuzzIndexFile fuzzes the index file parser after decryption.
func FuzzIndexFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"packs":[{"id":"` + ID{1}.String() + `","size":100,"blobs":[{"id":"` + ID{2}.String() + `","type":0,"offset":0,"length":60,"raw_length":32,"compressed":false}]}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":2,"packs":[{"id":"` + ID{1}.String() + `","size":100,"blobs":[{"id":"` + ID{2}.String() + `","type":0,"offset":0,"length":60,"raw_length":100,"compressed":true,"codec":"s2"}]}]}`))
	f.Add([]byte(`{"version":1,"packs":[{"size":-1}]}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		ix, err := parseIndexFile("index/x", plain)
		if err != nil {
			return
		}
		for _, p := range ix.Packs {
			for _, b := range p.Blobs {
				if p.Size > 0 && int64(b.Offset)+int64(b.Length) > p.Size {
					t.Fatalf("blob %+v past pack size %d", b, p.Size)
				}
				if b.RawLength > maxBlobPlain {
					t.Fatalf("blob %+v larger than the format allows", b)
				}
			}
		}
	})
}

// FuzzManifest fuzzes the manifest parser after decryption.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"name":"db","entries":[{"name":"a","size":3,"lists":["` + ID{3}.String() + `"]}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","lists":[]}]}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		m, err := parseManifest("backups/x", plain)
		if err != nil {
			return
		}
		for _, e := range m.Entries {
			if len(e.Lists) == 0 || e.Size < 0 {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}

// FuzzKeySlot fuzzes the key slot parser: whatever it accepts has KDF
// parameters inside the caps, so deriving with them is bounded.
func FuzzKeySlot(f *testing.F) {
	s := keySlot{Version: 1, KDF: kdfArgon2id, Params: DefaultKDF, Salt: make([]byte, 32), Wrapped: make([]byte, 60)}
	s.Check = s.checksum()
	b, _ := json.Marshal(s)
	f.Add(b)
	r := keySlot{Version: 1, Kind: kindRandom, KDF: kdfHKDF, Salt: make([]byte, 32), Wrapped: make([]byte, 60)}
	r.Check = r.checksum()
	b, _ = json.Marshal(r)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		slot, err := parseSlot("keys/x", data)
		if err != nil {
			return
		}
		if slot.KDF == kdfArgon2id && slot.Params.check() != nil {
			t.Fatalf("accepted params %+v", slot.Params)
		}
	})
}

// FuzzList fuzzes the list blob parser.
func FuzzList(f *testing.F) {
	f.Add(make([]byte, 36))
	f.Add(make([]byte, 35))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := parseList(ID{}, b)
		if err == nil && len(items)*36 != len(b) {
			t.Fatalf("%d items from %d bytes", len(items), len(b))
		}
	})
}

// FuzzFileIndex: a file index from storage, whatever its bytes, is either
// refused or yields records that lie inside their entry's chunks and add
// up to their lengths.
func FuzzFileIndex(f *testing.F) {
	f.Add([]byte(`[{"key":"a","stamp":"s","first":0,"chunks":2,"length":30}]`), 1)
	f.Add([]byte(`[{"key":"a","first":1,"chunks":1,"length":20},{"key":"b","first":2,"chunks":1,"length":5}]`), 2)
	f.Add([]byte(`[{"key":"a","first":-1,"chunks":9223372036854775807,"length":0}]`), 1)
	items := []listItem{{n: 10}, {n: 20}, {n: 5}}
	f.Fuzz(func(t *testing.T, b []byte, count int) {
		files, err := parseFileIndex(b, count, items)
		if err != nil {
			return
		}
		for _, fl := range files {
			var n int64
			for _, c := range fl.chunks {
				n += int64(c.n)
			}
			if fl.First < 0 || fl.First+fl.Chunks > int64(len(items)) || n != fl.Length {
				t.Fatalf("record %+v accepted", fl.FileRecord)
			}
		}
	})
}
