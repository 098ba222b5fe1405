package repo

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"sync"
)

// openBlob authenticates, decompresses and checks one sealed blob. Nothing
// reaches the caller unless it is exactly what was stored under id. It
// decrypts in place, so sealed's bytes are lost; a compressed blob is
// decoded into dst's spare capacity when it is large enough (see
// decompressBlobTo), an uncompressed one is returned as a slice of sealed.
func (r *Repository) openBlob(l Location, sealed []byte, dst []byte) ([]byte, error) {
	return r.openBlobWith(nil, l, sealed, dst)
}

// openBlobWith is openBlob naming the content with h (nil: a new hasher).
func (r *Repository) openBlobWith(h *chunkHasher, l Location, sealed []byte, dst []byte) ([]byte, error) {
	corrupt := func(err error) error { // named only on failure: a pack name costs allocations
		return &CorruptError{Object: packName(l.Pack), Err: err}
	}
	plain, err := r.seal.openInPlace(sealed, blobAD(l.ID, l.Type))
	if err != nil {
		return nil, corrupt(fmt.Errorf("blob %s: %w", l.ID.Short(), err))
	}
	if l.Compressed {
		plain, err = decompressBlobTo(l.BlobInfo, plain, dst)
		if err != nil {
			return nil, corrupt(fmt.Errorf("blob %s: decompress %s: %w", l.ID.Short(), l.Codec, err))
		}
	}
	if h == nil {
		h = r.ids.hasher()
	}
	if len(plain) != int(l.RawLength) || h.id(plain) != l.ID {
		return nil, corrupt(fmt.Errorf("blob %s: content does not match its id", l.ID.Short()))
	}
	return plain, nil
}

func (r *Repository) lookup(ctx context.Context, id ID) (Location, error) {
	idx, err := r.Index(ctx)
	if err != nil {
		return Location{}, err
	}
	l, ok := idx.Lookup(id)
	if !ok {
		return Location{}, fmt.Errorf("blob %s is not in the index: the repository is damaged; run `amber verify`", id.Short())
	}
	return l, nil
}

// loadBlob reads one blob by id.
func (r *Repository) loadBlob(ctx context.Context, id ID) ([]byte, error) {
	l, err := r.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.loadBlobAt(ctx, l)
}

// loadBlobAt reads the blob at l.
func (r *Repository) loadBlobAt(ctx context.Context, l Location) ([]byte, error) {
	rd, err := r.be.Load(ctx, packName(l.Pack), int64(l.Offset), int64(l.Length))
	if err != nil {
		return nil, fmt.Errorf("load blob %s: %w", l.ID.Short(), err)
	}
	defer rd.Close()
	sealed := make([]byte, l.Length)
	if _, err := io.ReadFull(rd, sealed); err != nil {
		return nil, fmt.Errorf("load blob %s: %w", l.ID.Short(), err)
	}
	return r.openBlob(l, sealed, nil)
}

type listItem struct {
	id ID
	n  uint32
}

func (r *Repository) loadList(ctx context.Context, id ID) ([]listItem, error) {
	l, err := r.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.loadListAt(ctx, l)
}

func (r *Repository) loadListAt(ctx context.Context, l Location) ([]listItem, error) {
	b, err := r.loadBlobAt(ctx, l)
	if err != nil {
		return nil, err
	}
	return parseList(l.ID, b)
}

// parseList decodes a list blob's plaintext.
func parseList(id ID, b []byte) ([]listItem, error) {
	if len(b)%36 != 0 || len(b) > listLen*36 {
		return nil, fmt.Errorf("list blob %s has a bad length %d", id.Short(), len(b))
	}
	out := make([]listItem, len(b)/36)
	for i := range out {
		copy(out[i].id[:], b[i*36:])
		out[i].n = binary.LittleEndian.Uint32(b[i*36+32:])
	}
	return out, nil
}

// run is a stretch of an entry's blobs stored close together in one pack,
// in any order (a writer's workers store neighbouring chunks as each
// finishes), fetched with one ranged read of [lo, hi).
type run struct {
	locs   []Location // in the entry's order
	lo, hi int64
	out    chan runResult
}

// runResult is a run's blobs, opened and checked, in order. They lie in
// bufs, pooled buffers given back once the parts are written.
type runResult struct {
	parts [][]byte
	bufs  [2][]byte
	err   error
}

func (res *runResult) release() {
	for i, b := range res.bufs {
		putBuf(b)
		res.bufs[i] = nil
	}
	res.parts = nil
}

// Buffers of runs are pooled by size class (powers of two from 64 KiB to
// 32 MiB), so a restore reuses the memory an earlier run faulted in instead
// of allocating about two bytes per byte restored.
const (
	minBufClass = 16
	maxBufClass = 25
)

var bufPools [maxBufClass - minBufClass + 1]sync.Pool

// getBuf returns a buffer of length n, not zeroed.
func getBuf(n int) []byte {
	c := max(bits.Len(uint(max(n, 1)-1)), minBufClass)
	if c > maxBufClass {
		return make([]byte, n)
	}
	if b, ok := bufPools[c-minBufClass].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

// putBuf gives back a buffer from getBuf; nil and others are ignored.
func putBuf(b []byte) {
	c := bits.Len(uint(cap(b)) - 1)
	if cap(b) == 0 || cap(b) != 1<<c || c < minBufClass || c > maxBufClass {
		return
	}
	b = b[:0]
	bufPools[c-minBufClass].Put(&b)
}

// A run reads at most maxRun stored bytes and decodes to at most
// maxRunPlain bytes (a single blob may exceed either), which bounds the
// memory of the runs in flight however well the data compressed. Of what
// it reads, at most maxRunGap bytes or a quarter of its blobs' (if more)
// lie between them: others' blobs, or its own stored a little ahead.
const (
	maxRun      = 8 << 20
	maxRunPlain = 4 << 20
	maxRunGap   = 1 << 20
)

// WriteEntry writes the entry's content to out in order. Every blob is
// authenticated and checked against its id before a byte of it is written.
func (r *Repository) WriteEntry(ctx context.Context, e Entry, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := max(runtime.GOMAXPROCS(0), 2)
	jobs := make(chan *run)
	order := make(chan *run, 2*workers)
	planErr := make(chan error, 1)

	go func() { // plan runs in order
		defer close(order)
		defer close(jobs)
		planErr <- r.planRuns(ctx, e, func(rn *run) bool {
			select {
			case order <- rn:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- rn:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	for range workers {
		go func() {
			h := r.ids.hasher()
			for rn := range jobs {
				rn.out <- r.fetchRun(ctx, h, rn)
			}
		}()
	}
	var written int64
	for rn := range order {
		res := <-rn.out
		if res.err != nil {
			cancel()
			return res.err
		}
		for _, p := range res.parts {
			n, err := out.Write(p)
			written += int64(n)
			if err != nil {
				cancel()
				return err
			}
		}
		res.release() // a Writer must not keep what it was given
	}
	if err := <-planErr; err != nil {
		return err
	}
	if written != e.Size {
		return fmt.Errorf("entry %s: restored %d bytes, manifest says %d", e.Name, written, e.Size)
	}
	return nil
}

func (r *Repository) planRuns(ctx context.Context, e Entry, emit func(*run) bool) error {
	var cur *run
	var need, plain int64        // the run's blobs' stored and decoded bytes
	offsets := map[uint32]bool{} // where the run's blobs lie, to read each once
	flush := func() bool {
		if cur == nil {
			return true
		}
		rn := cur
		cur = nil
		return emit(rn)
	}
	for _, lid := range e.Lists {
		items, err := r.loadList(ctx, lid)
		if err != nil {
			return fmt.Errorf("entry %s: %w", e.Name, err)
		}
		for _, it := range items {
			l, err := r.lookup(ctx, it.id)
			if err != nil {
				return fmt.Errorf("entry %s: %w", e.Name, err)
			}
			if l.RawLength != it.n {
				return fmt.Errorf("entry %s: chunk %s length %d, index says %d", e.Name, it.id.Short(), it.n, l.RawLength)
			}
			off, end := int64(l.Offset), int64(l.Offset)+int64(l.Length)
			if cur != nil {
				lo, hi := min(cur.lo, off), max(cur.hi, end)
				n := need + int64(l.Length)
				if l.Pack != cur.locs[0].Pack || offsets[l.Offset] || hi-lo > maxRun ||
					plain+int64(l.RawLength) > maxRunPlain || hi-lo-n > max(n/4, maxRunGap) {
					if !flush() {
						return ctx.Err()
					}
				}
			}
			if cur == nil {
				cur = &run{lo: off, hi: end, out: make(chan runResult, 1)}
				need, plain = 0, 0
				clear(offsets)
			}
			cur.locs = append(cur.locs, l)
			cur.lo, cur.hi = min(cur.lo, off), max(cur.hi, end)
			need += int64(l.Length)
			plain += int64(l.RawLength)
			offsets[l.Offset] = true
		}
	}
	if !flush() {
		return ctx.Err()
	}
	return nil
}

// fetchRun reads a run with one ranged read into a pooled buffer, opens
// its blobs there in place and decodes the compressed ones into a second
// pooled buffer, one after another, each checked against its id with h.
func (r *Repository) fetchRun(ctx context.Context, h *chunkHasher, rn *run) (res runResult) {
	locs := rn.locs
	length := rn.hi - rn.lo
	name := packName(locs[0].Pack)
	var decoded int64 // what the compressed blobs decode to
	for _, l := range locs {
		if l.Compressed {
			decoded += int64(l.RawLength)
		}
	}
	defer func() {
		if res.err != nil {
			res.release()
		}
	}()
	rd, err := r.be.Load(ctx, name, rn.lo, length)
	if err != nil {
		return runResult{err: fmt.Errorf("load %s: %w", name, err)}
	}
	buf := getBuf(int(length))
	res.bufs[0] = buf
	_, err = io.ReadFull(rd, buf)
	rd.Close()
	if err != nil {
		res.err = fmt.Errorf("read %s: %w", name, err)
		return res
	}
	var plain []byte
	if decoded > 0 {
		plain = getBuf(int(decoded) + decodeSlack)
		res.bufs[1] = plain
	}
	res.parts = make([][]byte, len(locs))
	at := 0 // where the next compressed blob decodes to in plain
	for i, l := range locs {
		off := int64(l.Offset) - rn.lo
		end := off + int64(l.Length)
		if off < 0 || end > int64(len(buf)) {
			res.err = &CorruptError{Object: name, Err: fmt.Errorf("blob %s lies outside the range read", l.ID.Short())}
			return res
		}
		var dst []byte
		if l.Compressed {
			// Room for its bytes and the decoder's slack, which the
			// next blob's bytes overwrite.
			dst = plain[at:at:min(at+int(l.RawLength)+decodeSlack, len(plain))]
			at += int(l.RawLength)
		}
		p, err := r.openBlobWith(h, l, buf[off:end], dst)
		if err != nil {
			res.err = err
			return res
		}
		res.parts[i] = p
	}
	return res
}
