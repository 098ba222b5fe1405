package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ManifestVersionFiles is the format version of a manifest whose entries
// carry file indexes (Entry.Files). Amber writes it only for such backups,
// so an older amber, which would not know to keep a file index's blobs,
// refuses these manifests instead of pruning the blobs away.
const ManifestVersionFiles = 2

// maxFileIndex bounds the plaintext of one entry's file index.
const maxFileIndex = 1 << 30

// FileRecord is one file of an entry written with WriteParts: a run of
// whole chunks of the entry, cut where the record starts and ends.
type FileRecord struct {
	Key    string `json:"key"`    // unique in the entry, as the plugin marked it
	Stamp  string `json:"stamp"`  // the plugin's identity of this version of the file
	First  int64  `json:"first"`  // index of its first chunk in the entry's chunk list
	Chunks int64  `json:"chunks"` // number of chunks
	Length int64  `json:"length"` // bytes
}

// FileIndex is where an entry's file records are stored: their JSON
// array, chunked and listed like an entry's content.
type FileIndex struct {
	Size  int64 `json:"size"`
	Lists []ID  `json:"lists"`
	Count int   `json:"count"` // number of records
}

// allLists returns the list blobs an entry uses: its content's and its
// file index's.
func (e Entry) allLists() []ID {
	if e.Files == nil {
		return e.Lists
	}
	return append(append([]ID(nil), e.Lists...), e.Files.Lists...)
}

// hasFiles reports whether any entry of m has a file index.
func (m *Manifest) hasFiles() bool {
	for _, e := range m.Entries {
		if e.Files != nil {
			return true
		}
	}
	return false
}

// PrevFile is a file record of an earlier backup, with its chunks, ready to
// be reused by WriteParts.
type PrevFile struct {
	FileRecord
	chunks []listItem
}

// FileRecords loads and checks the file records of every entry of backup m
// that has them, by entry name. Every record must lie inside its entry's
// chunk list, its chunks must be indexed and add up to its length; a
// record that does not is reported as corruption, never reused.
func (r *Repository) FileRecords(ctx context.Context, m *Manifest) (map[string][]PrevFile, error) {
	idx, err := r.Index(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]PrevFile{}
	for _, e := range m.Entries {
		if e.Files == nil {
			continue
		}
		where := fmt.Sprintf("backup %s entry %s", m.ID.Short(), e.Name)
		if e.Files.Size < 0 || e.Files.Size > maxFileIndex || len(e.Files.Lists) == 0 {
			return nil, &CorruptError{Object: backupsDir + m.ID.String(), Err: fmt.Errorf("%s: bad file index", where)}
		}
		var buf bytes.Buffer
		if err := r.WriteEntry(ctx, Entry{Name: e.Name + " file index", Size: e.Files.Size, Lists: e.Files.Lists}, &buf); err != nil {
			return nil, fmt.Errorf("%s: file index: %w", where, err)
		}
		var items []listItem
		for _, lid := range e.Lists {
			it, err := r.loadList(ctx, lid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			items = append(items, it...)
		}
		files, err := parseFileIndex(buf.Bytes(), e.Files.Count, items)
		if err != nil {
			return nil, &CorruptError{Object: backupsDir + m.ID.String(), Err: fmt.Errorf("%s: %w", where, err)}
		}
		for _, f := range files {
			for _, c := range f.chunks {
				if !idx.Has(c.id) {
					return nil, fmt.Errorf("%s: file record %q uses blob %s, which no index file names; run `amber repair index`", where, f.Key, c.id.Short())
				}
			}
		}
		out[e.Name] = files
	}
	return out, nil
}

// parseFileIndex decodes a file index's plaintext, which must hold count
// records, and checks each against its entry's chunks (items): in order,
// not overlapping, inside the list, keys unique and not empty, chunks adding
// up to the record's length.
func parseFileIndex(plain []byte, count int, items []listItem) ([]PrevFile, error) {
	var recs []FileRecord
	if err := json.Unmarshal(plain, &recs); err != nil {
		return nil, fmt.Errorf("file index: %w", err)
	}
	if len(recs) != count {
		return nil, fmt.Errorf("file index holds %d records, manifest says %d", len(recs), count)
	}
	seen := make(map[string]bool, len(recs))
	var next int64
	files := make([]PrevFile, 0, len(recs))
	for _, rec := range recs {
		bad := func(why string) error { return fmt.Errorf("file record %q %s", rec.Key, why) }
		if rec.Key == "" || seen[rec.Key] {
			return nil, bad("is empty or repeated")
		}
		seen[rec.Key] = true
		if rec.First < next || rec.Chunks < 0 || rec.First > int64(len(items)) || rec.Chunks > int64(len(items))-rec.First {
			return nil, bad("lies outside its entry's chunks or overlaps another")
		}
		next = rec.First + rec.Chunks
		chunks := items[rec.First:next:next]
		var n int64
		for _, c := range chunks {
			n += int64(c.n)
		}
		if n != rec.Length {
			return nil, bad(fmt.Sprintf("has %d bytes of chunks, but says %d", n, rec.Length))
		}
		files = append(files, PrevFile{FileRecord: rec, chunks: chunks})
	}
	return files, nil
}

// Part is one piece of an entry written with WriteParts: bytes to chunk
// (Reader), a file record of an earlier backup to reuse (Reuse), or one to
// patch (Patch, with Reader yielding the patch's bytes). Key, when set,
// makes the part a file record of the new entry.
type Part struct {
	Key    string
	Stamp  string
	Reader io.Reader
	Reuse  *PrevFile
	Patch  *Patch
}

// Patch describes a file record as a change of an earlier one: the first
// Keep bytes of Base (fewer if it is shorter), zeros up to Length, and
// each of Ranges replaced by the part's bytes, in order.
type Patch struct {
	Base   *PrevFile
	Keep   int64
	Length int64
	Ranges []Range // increasing, not overlapping, inside [0, Length)
}

// Range is a run of bytes of a record.
type Range struct{ Off, Len int64 }

// WriteParts stores an entry made of parts, which next yields in order
// (io.EOF after the last). Chunks are cut at every part's start, so a part
// with the same bytes as before is stored as the same chunks; a reused
// record's chunks are referenced again without being read. The entry's
// file records are stored with it (Entry.Files).
func (w *Writer) WriteParts(ctx context.Context, name string, next func() (Part, error)) (Entry, error) {
	var recs []FileRecord
	seen := map[string]bool{}
	ent, err := w.writeChunks(ctx, name, func(emit emitter) error {
		var idx int64
		for {
			p, err := next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if p.Key != "" {
				if seen[p.Key] {
					return fmt.Errorf("file record %q marked twice in entry %s", p.Key, name)
				}
				seen[p.Key] = true
			}
			first := idx
			var length int64
			switch {
			case p.Reuse != nil:
				if p.Key != p.Reuse.Key {
					return fmt.Errorf("reuse of record %q for %q", p.Reuse.Key, p.Key)
				}
				for _, c := range p.Reuse.chunks {
					if !w.have(c.id) {
						return fmt.Errorf("chunk %s of the earlier record %q is no longer in the repository; take a full backup", c.id.Short(), p.Key)
					}
					if err := emit.stored(c.id, int(c.n)); err != nil {
						return err
					}
					w.BytesReused.Add(int64(c.n))
					length += int64(c.n)
					idx++
				}
				w.FilesReused.Add(1)
			case p.Patch != nil:
				n, k, err := w.writePatch(ctx, emit, p.Patch, p.Reader)
				if err != nil {
					return fmt.Errorf("patch of file record %q: %w", p.Patch.Base.Key, err)
				}
				length, idx = n, idx+int64(k)
				w.FilesPatched.Add(1)
			case p.Reader != nil:
				n, k, err := emit.chunk(p.Reader)
				if err != nil {
					return err
				}
				length, idx = n, idx+int64(k)
				if p.Key != "" {
					w.FilesWritten.Add(1)
				}
			}
			if p.Key != "" {
				recs = append(recs, FileRecord{Key: p.Key, Stamp: p.Stamp, First: first, Chunks: idx - first, Length: length})
			}
		}
	})
	if err != nil {
		return Entry{}, err
	}
	if len(recs) == 0 {
		return ent, nil
	}
	plain, err := json.Marshal(recs)
	if err != nil {
		return Entry{}, err
	}
	fi, err := w.WriteStream(ctx, name+" file index", bytes.NewReader(plain))
	if err != nil {
		return Entry{}, err
	}
	w.BytesIn.Add(-fi.Size) // the index is not data read from the plugin
	ent.Files = &FileIndex{Size: fi.Size, Lists: fi.Lists, Count: len(recs)}
	return ent, nil
}

// have reports whether the repository (or this writer) stores blob id,
// noting its pack for the commit's check.
func (w *Writer) have(id ID) bool {
	l, stored := w.idx.Lookup(id)
	w.mu.Lock()
	defer w.mu.Unlock()
	if stored {
		if !w.claimed[id] {
			w.reused[l.Pack] = true
		}
		return true
	}
	return w.claimed[id]
}
