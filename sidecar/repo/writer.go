package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amber-backup/amber/sidecar/repo/chunker"
	"github.com/amber-backup/amber/sidecar/storage"
)

// listLen is how many (id, length) pairs one list blob holds at most.
const listLen = 16384

// Writer adds data to the repository for one backup. Streams written with
// WriteStream become entries; Commit makes them visible as one backup by
// writing its manifest last. While it is open, a marker under writers/
// keeps prune from deleting any pack. Call Close when done (it is a no-op
// after Commit): a Writer that is never committed leaves only unreferenced
// packs, which prune removes once its marker is gone or stale.
type Writer struct {
	r      *Repository
	idx    *Index // the repository's index as loaded from index files
	marker *lease

	mu        sync.Mutex
	pack      packBuilder
	claimed   map[ID]bool // blobs this writer has stored or is storing
	reused    map[ID]bool // packs of blobs this writer deduplicated against
	started   time.Time
	committed ID
	ctx       context.Context   // uploads run under the writer's context, not a stream's
	written   []indexPack       // packs uploaded, not yet in an index file
	uploaded  []ID              // every pack this writer uploaded
	sem       chan struct{}     // one token per pack being uploaded
	bufs      sync.Pool         // pack buffers, reused once uploaded
	slabs     *slabPool         // stream buffers chunks are cut from
	idle      chan *chunkWorker // idle workers' state, reused across streams
	upWG      sync.WaitGroup
	upErr     error

	// Progress counters, safe to read while writing.
	BytesIn    atomic.Int64 // plaintext bytes read from streams
	BytesAdded atomic.Int64 // bytes stored (packs, index, manifest)
	BlobsNew   atomic.Int64
	BlobsDedup atomic.Int64
	// Reused file records (WriteParts): bytes and records referenced
	// again from an earlier backup without being read.
	BytesReused  atomic.Int64
	FilesReused  atomic.Int64
	FilesWritten atomic.Int64 // file records read
	FilesPatched atomic.Int64 // file records patched (Part.Patch)
}

// uploaders is how many packs upload at once.
const uploaders = 3

// chunkWorker is what a goroutine needs to store chunks: a zstd encoder's
// tables and history take a few MB to set up, a keyed BLAKE3 state a few KiB.
type chunkWorker struct {
	enc *blobEncoder
	ids *chunkHasher
}

// workersKept is how many idle workers' state a writer keeps for its next
// streams.
const workersKept = 8

// worker returns an idle worker's state or a new one.
func (w *Writer) worker() *chunkWorker {
	select {
	case cw := <-w.idle:
		return cw
	default:
		return &chunkWorker{enc: w.r.opts.Compression.newEncoder(), ids: w.r.ids.hasher()}
	}
}

// putWorker keeps cw for another stream, or closes it.
func (w *Writer) putWorker(cw *chunkWorker) {
	select {
	case w.idle <- cw:
	default:
		cw.enc.close()
	}
}

// NewWriter starts a writer: it writes its marker (writers/<random id>),
// waits for a running prune to finish (at most Options.LockWait), then
// loads the index for deduplication.
func (r *Repository) NewWriter(ctx context.Context) (*Writer, error) {
	marker, err := r.takeLease(ctx, newMarkerName(writersDir))
	if err != nil {
		return nil, fmt.Errorf("write writer marker: %w", err)
	}
	newest, err := r.waitForPrune(ctx, marker)
	if err != nil {
		marker.release(ctx)
		return nil, err
	}
	idx, err := r.indexSince(ctx, newest)
	if err != nil {
		marker.release(ctx)
		return nil, err
	}
	w := &Writer{r: r, idx: idx, marker: marker, claimed: make(map[ID]bool), reused: make(map[ID]bool),
		sem: make(chan struct{}, uploaders), started: r.now().UTC(), ctx: ctx, slabs: newSlabPool(r.cfg.Chunker.Max),
		idle: make(chan *chunkWorker, workersKept)}
	packCap := r.cfg.PackSize + r.cfg.PackSize/8
	w.bufs.New = func() any { return make([]byte, 0, packCap) }
	return w, nil
}

// indexSince returns the index, loaded afresh if a prune finished since it
// was loaded (pruned is the newest locks/pruned- marker): the old one may
// name packs that prune deleted.
func (r *Repository) indexSince(ctx context.Context, pruned string) (*Index, error) {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	if r.idx != nil && r.idxPruned == pruned {
		return r.idx, nil
	}
	idx := newIndex()
	if err := r.loadIndex(ctx, idx); err != nil {
		return nil, err
	}
	r.idx, r.idxPruned = idx, pruned
	return idx, nil
}

// Close ends the writer without committing: it waits for uploads in flight
// and removes its marker. Its packs stay until a prune removes them.
func (w *Writer) Close() error {
	w.upWG.Wait()
	w.marker.release(w.ctx)
	return nil
}

// storeBlob seals payload (b's plaintext, compressed as b says) and adds it
// to the current pack, handing full packs to the uploaders.
func (w *Writer) storeBlob(ctx context.Context, b BlobInfo, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.upErr != nil {
		return w.upErr
	}
	if w.pack.buf == nil {
		w.pack.buf = w.bufs.Get().([]byte)[:0]
	}
	w.pack.sealInto(w.r.seal, b, payload)
	if len(w.pack.buf) >= w.r.cfg.PackSize {
		return w.flushLocked(ctx)
	}
	return nil
}

// flushLocked finishes the current pack and queues it for upload.
func (w *Writer) flushLocked(ctx context.Context) error {
	if len(w.pack.blobs) == 0 {
		return nil
	}
	pb := w.pack
	w.pack = packBuilder{}
	buf, id, blobs := pb.finish(w.r.seal)
	w.mu.Unlock()
	err := w.upload(ctx, id, buf, blobs)
	w.mu.Lock()
	return err
}

// upload saves one pack (with backpressure: at most `uploaders` in flight)
// and records it for the index once it is durable.
func (w *Writer) upload(ctx context.Context, id ID, buf []byte, blobs []BlobInfo) error {
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.upWG.Add(1)
	go func() {
		defer w.upWG.Done()
		defer func() { <-w.sem }()
		err := w.r.be.Save(w.ctx, packName(id), bytes.NewReader(buf), int64(len(buf)))
		w.bufs.Put(buf[:0]) //nolint:staticcheck // a slice is fine here: the pool holds few, large buffers
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.upErr == nil {
				w.upErr = fmt.Errorf("upload %s: %w", packName(id), err)
			}
			return
		}
		p := indexPack{ID: id, Size: int64(len(buf)), Blobs: blobs}
		w.written = append(w.written, p)
		w.uploaded = append(w.uploaded, id)
		w.BytesAdded.Add(int64(len(buf)))
	}()
	return nil
}

// claim reports whether the caller should store blob id: false when the
// repository or this writer already has it.
func (w *Writer) claim(id ID) bool {
	l, stored := w.idx.Lookup(id)
	w.mu.Lock()
	defer w.mu.Unlock()
	if stored {
		if !w.claimed[id] {
			w.reused[l.Pack] = true
		}
		return false
	}
	if w.claimed[id] {
		return false
	}
	w.claimed[id] = true
	return true
}

// Entry is one named stream of a backup.
type Entry struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	Lists []ID   `json:"lists"` // list blobs, in order
	// Meta holds engine-specific attributes (file mode, tablespace, ...).
	Meta map[string]string `json:"meta,omitempty"`
	// Files, for entries written with WriteParts, stores the entry's file
	// records (manifest version 2).
	Files *FileIndex `json:"files,omitempty"`
}

type chunkJob struct {
	data []byte // the chunk, in slab (nil: already stored)
	slab *slab
	n    int
	done chan chunkResult
}

type chunkResult struct {
	id  ID
	n   int
	err error
}

// WriteStream chunks rd to its end and stores the chunks; the returned
// entry (named name) lists them in order. Memory stays bounded whatever
// the stream's length.
func (w *Writer) WriteStream(ctx context.Context, name string, rd io.Reader) (Entry, error) {
	ra := newReadAhead(rd, w.slabs)
	defer ra.Close()
	return w.writeChunks(ctx, name, func(emit emitter) error {
		_, _, err := emit.cut(ra)
		return err
	})
}

// emitter feeds writeChunks's pipeline, in order.
type emitter struct {
	*cutter
	send func(*chunkJob) error
	w    *Writer
	name string
}

// cutter cuts chunks out of the slabs a stream is read into.
type cutter struct {
	cdc    *chunker.Chunker
	pool   *slabPool
	cur    *slab // the slab holding the bytes not cut yet, with the cutter's hold
	lo, hi int   // those bytes: cur.buf[lo:hi]
}

// done drops the cutter's hold on its slab.
func (c *cutter) done() {
	if c.cur != nil {
		c.cur.release()
		c.cur = nil
	}
}

// chunk cuts rd to its end into chunks, the first starting at rd's first
// byte; it returns the bytes and chunks it sent.
func (e emitter) chunk(rd io.Reader) (int64, int, error) {
	return e.cut(&directPieces{rd: rd, pool: e.pool})
}

// cut is chunk for a stream delivered in pieces.
func (e emitter) cut(src pieces) (int64, int, error) {
	e.cdc.Reset(nil)
	var n int64
	k := 0
	eof := false
	for {
		var win []byte
		if e.cur != nil {
			win = e.cur.buf[e.lo:e.hi]
		}
		if len(win) == 0 && eof {
			return n, k, nil
		}
		size, ok := e.cdc.Cut(win, eof)
		if !ok {
			p, err := src.next(e.cur, e.hi)
			if errors.Is(err, io.EOF) {
				eof = true
				continue
			}
			if err != nil {
				return n, k, fmt.Errorf("read %s: %w", e.name, err)
			}
			if p.s != e.cur { // move the bytes not cut yet to the new slab's head
				copy(p.s.buf[p.lo-len(win):p.lo], win)
				e.done()
				e.cur, e.lo = p.s, p.lo-len(win)
			}
			e.hi = p.hi
			continue
		}
		e.lo += size
		e.cur.hold()
		if err := e.send(&chunkJob{data: win[:size:size], slab: e.cur, n: size, done: make(chan chunkResult, 1)}); err != nil {
			return n, k, err
		}
		e.w.BytesIn.Add(int64(size))
		n += int64(size)
		k++
	}
}

// stored sends a chunk the repository already holds.
func (e emitter) stored(id ID, n int) error {
	j := &chunkJob{n: n, done: make(chan chunkResult, 1)}
	j.done <- chunkResult{id: id, n: n}
	e.w.BlobsDedup.Add(1)
	return e.send(j)
}

// writeChunks stores the chunks fill sends (cut from readers or already
// stored) and returns an entry listing them in order.
func (w *Writer) writeChunks(ctx context.Context, name string, fill func(emitter) error) (Entry, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := w.r.cfg.Chunker
	cdc, err := chunker.New(nil, w.r.gear, chunker.Params{Min: c.Min, Avg: c.Avg, Max: c.Max})
	if err != nil {
		return Entry{}, fmt.Errorf("chunker: %w", err)
	}
	workers := max(runtime.GOMAXPROCS(0), 2)
	jobs := make(chan *chunkJob, workers)
	order := make(chan *chunkJob, 4*workers) // bounds chunks in flight
	cut := &cutter{cdc: cdc, pool: w.slabs}

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw := w.worker()
			defer w.putWorker(cw)
			enc, ids := cw.enc, cw.ids
			for j := range jobs {
				data := j.data
				id := ids.id(data)
				var err error
				if w.claim(id) {
					b := BlobInfo{ID: id, Type: DataBlob, RawLength: uint32(len(data))}
					if comp := enc.encode(data); len(comp) < len(data) {
						b.Compressed, b.Codec = true, enc.codec
						err = w.storeBlob(ctx, b, comp)
					} else {
						err = w.storeBlob(ctx, b, data)
					}
					w.BlobsNew.Add(1)
				} else {
					w.BlobsDedup.Add(1)
				}
				j.slab.release()
				j.done <- chunkResult{id: id, n: j.n, err: err}
			}
		}()
	}

	// Read and chunk in one goroutine, in order.
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		send := func(j *chunkJob) error {
			select {
			case order <- j:
			case <-ctx.Done():
				if j.slab != nil {
					j.slab.release()
				}
				return ctx.Err()
			}
			if j.data == nil { // already stored
				return nil
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				j.slab.release()
				j.done <- chunkResult{err: ctx.Err()} // it is in order: answer it
				return ctx.Err()
			}
			return nil
		}
		err := fill(emitter{cutter: cut, send: send, w: w, name: name})
		cut.done()
		readErr <- err
	}()

	entry := Entry{Name: name}
	var list []byte // grows to listLen entries: most streams need far fewer
	var firstErr error
	for j := range order {
		res := <-j.done
		if firstErr != nil {
			continue
		}
		if res.err != nil {
			firstErr = res.err
			cancel()
			continue
		}
		entry.Size += int64(res.n)
		list = append(list, res.id[:]...)
		list = binary.LittleEndian.AppendUint32(list, uint32(res.n))
		if len(list) == listLen*36 {
			id, err := w.storeList(ctx, list)
			if err != nil {
				firstErr = err
				cancel()
				continue
			}
			entry.Lists = append(entry.Lists, id)
			list = list[:0]
		}
	}
	wg.Wait()
	if err := <-readErr; err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return Entry{}, firstErr
	}
	if len(list) > 0 || len(entry.Lists) == 0 {
		id, err := w.storeList(ctx, list)
		if err != nil {
			return Entry{}, err
		}
		entry.Lists = append(entry.Lists, id)
	}
	return entry, nil
}

// storeList stores one list blob (compressed, deduplicated like data).
func (w *Writer) storeList(ctx context.Context, list []byte) (ID, error) {
	id := w.r.ids.id(list)
	if !w.claim(id) {
		return id, nil
	}
	// List blobs are always zstd: they are few and small, whatever the
	// data's codec.
	comp := zenc.EncodeAll(list, nil)
	return id, w.storeBlob(ctx, BlobInfo{ID: id, Type: ListBlob, RawLength: uint32(len(list)), Compressed: true}, comp)
}

// flushPacks uploads the open pack and waits for every upload.
func (w *Writer) flushPacks(ctx context.Context) error {
	w.mu.Lock()
	err := w.flushLocked(ctx)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	w.upWG.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.upErr
}

// saveWrittenIndex writes an index file for the packs uploaded since the
// last one; only then do they join the repository's index.
func (w *Writer) saveWrittenIndex(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.written) == 0 {
		return nil
	}
	n, err := w.r.saveIndex(ctx, w.idx, w.written)
	if err != nil {
		return err
	}
	w.BytesAdded.Add(n)
	w.written = nil
	return nil
}

// statPacksMax is how many packs Commit checks one by one; above it, one
// listing of data/ is cheaper.
const statPacksMax = 256

// checkPacks makes sure every pack the backup references (its own and
// those it deduplicated against) still exists.
func (w *Writer) checkPacks(ctx context.Context) error {
	w.mu.Lock()
	want := make(map[ID]bool, len(w.uploaded)+len(w.reused))
	for _, p := range w.uploaded {
		want[p] = true
	}
	for p := range w.reused {
		want[p] = true
	}
	w.mu.Unlock()
	missing := func(p ID, err error) error {
		return fmt.Errorf("pack %s, which this backup references, is gone (%v); nothing was committed: run the backup again", packName(p), err)
	}
	if len(want) > statPacksMax {
		have := make(map[string]bool)
		if err := w.r.be.List(ctx, dataDir, func(fi storage.FileInfo) error { have[fi.Name] = true; return nil }); err != nil {
			return fmt.Errorf("list packs: %w", err)
		}
		for p := range want {
			if !have[packName(p)] {
				return missing(p, storage.ErrNotFound)
			}
		}
		return nil
	}
	work := make(chan ID)
	errc := make(chan error, len(want))
	var wg sync.WaitGroup
	for range min(16, len(want)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if _, err := w.r.be.Stat(ctx, packName(p)); err != nil {
					if errors.Is(err, storage.ErrNotFound) {
						err = missing(p, err)
					} else {
						err = fmt.Errorf("check %s: %w", packName(p), err)
					}
					errc <- err
				}
			}
		}()
	}
	for p := range want {
		work <- p
	}
	close(work)
	wg.Wait()
	close(errc)
	return <-errc // nil when the channel is empty
}
