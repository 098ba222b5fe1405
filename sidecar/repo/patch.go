package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// writePatch emits the record p describes: each chunk of the base record
// that lies whole inside what is kept and that no range overlaps is
// referenced again without being read; the runs of other chunks are read
// from the repository, patched with data's bytes and chunked anew, together
// with what lies past the base record. It returns the record's bytes and
// chunks.
func (w *Writer) writePatch(ctx context.Context, emit emitter, p *Patch, data io.Reader) (int64, int, error) {
	if p.Base == nil || p.Length < 0 || p.Keep < 0 {
		return 0, 0, errors.New("bad patch")
	}
	var want int64
	next := int64(0)
	for _, r := range p.Ranges {
		if r.Len <= 0 || r.Off < next || r.Off > p.Length-r.Len {
			return 0, 0, fmt.Errorf("range %d+%d out of order or past the record's %d bytes", r.Off, r.Len, p.Length)
		}
		next = r.Off + r.Len
		want += r.Len
	}
	if data == nil {
		data = eofReader{}
	}
	keep := min(p.Keep, p.Base.Length, p.Length)
	var (
		n     int64
		k     int
		run   []patchSeg // base chunks (or zeros) to read and patch, in order
		check = 0        // first range that may overlap the chunk at hand
	)
	pr := &patchReader{ctx: ctx, w: w, ranges: p.Ranges, data: data}
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		pr.start(run)
		m, c, err := emit.chunk(pr)
		pr.stop()
		if err == nil && pr.err != nil {
			err = pr.err
		}
		if err != nil {
			return err
		}
		n, k, run = n+m, k+c, nil
		return nil
	}
	var pos int64
	for _, c := range p.Base.chunks {
		s, e := pos, pos+int64(c.n)
		pos = e
		if s >= keep {
			break
		}
		for check < len(p.Ranges) && p.Ranges[check].Off+p.Ranges[check].Len <= s {
			check++
		}
		touched := check < len(p.Ranges) && p.Ranges[check].Off < e
		if e <= keep && !touched && w.have(c.id) {
			if err := flush(); err != nil {
				return 0, 0, err
			}
			if err := emit.stored(c.id, int(c.n)); err != nil {
				return 0, 0, err
			}
			w.BytesReused.Add(int64(c.n))
			n += int64(c.n)
			k++
			continue
		}
		run = append(run, patchSeg{id: c.id, base: true, off: s, n: min(e, keep) - s, full: int(c.n)})
	}
	if keep < p.Length { // zeros past what is kept of the base
		run = append(run, patchSeg{off: keep, n: p.Length - keep})
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	if pr.read != want {
		return 0, 0, fmt.Errorf("%d bytes of patch data for ranges of %d", pr.read, want)
	}
	var extra [1]byte
	if m, _ := io.ReadFull(data, extra[:]); m > 0 {
		return 0, 0, fmt.Errorf("more patch data than the ranges' %d bytes", want)
	}
	if n != p.Length {
		return 0, 0, fmt.Errorf("built %d bytes, want %d", n, p.Length)
	}
	return n, k, nil
}

// patchSeg is a piece of a patched record that is read: n bytes at off of
// the base record's chunk id (full bytes long), or zeros.
type patchSeg struct {
	id   ID
	base bool
	off  int64
	n    int64
	full int
}

// patchReader yields the bytes of a run of patchSegs, each patched with
// the ranges' data.
type patchReader struct {
	ctx    context.Context
	w      *Writer
	ranges []Range
	ri     int // first range not wholly consumed
	data   io.Reader
	read   int64 // patch bytes consumed
	segs   []patchSeg
	blobs  []chan blobResult // per seg: its base chunk, loaded ahead
	cancel context.CancelFunc
	sem    chan struct{}
	buf    []byte
	err    error
}

type blobResult struct {
	b   []byte
	err error
}

// patchPrefetch is how many base chunks are loaded ahead of the chunker.
const patchPrefetch = 4

// start begins reading run, loading its base chunks ahead, a few at once.
func (r *patchReader) start(run []patchSeg) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.segs, r.buf, r.cancel = run, nil, cancel
	r.blobs = make([]chan blobResult, len(run))
	for i := range run {
		r.blobs[i] = make(chan blobResult, 1)
	}
	sem := make(chan struct{}, patchPrefetch) // a token per chunk loading or loaded, not yet taken
	r.sem = sem
	blobs := r.blobs
	go func() {
		for i, seg := range run {
			if !seg.base {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func(out chan<- blobResult, id ID) {
				b, err := r.w.r.loadBlob(ctx, id)
				out <- blobResult{b, err}
			}(blobs[i], seg.id)
		}
	}()
}

// stop ends the loads still running.
func (r *patchReader) stop() { r.cancel() }

func (r *patchReader) Read(b []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if len(r.segs) == 0 {
			return 0, io.EOF
		}
		seg, blob := r.segs[0], r.blobs[0]
		r.segs, r.blobs = r.segs[1:], r.blobs[1:]
		if err := r.fill(seg, blob); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(b, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fill takes seg's bytes into buf (its base chunk from blob) and applies
// the ranges that overlap it.
func (r *patchReader) fill(seg patchSeg, loaded chan blobResult) error {
	var buf []byte
	if seg.base {
		var res blobResult
		select {
		case res = <-loaded:
			<-r.sem
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
		blob, err := res.b, res.err
		if err != nil {
			return err
		}
		if len(blob) != seg.full {
			return &CorruptError{Object: "blob " + seg.id.Short(), Err: fmt.Errorf("%d bytes, its list says %d", len(blob), seg.full)}
		}
		buf = blob[:seg.n]
	} else {
		buf = make([]byte, seg.n)
	}
	end := seg.off + seg.n
	for r.ri < len(r.ranges) {
		rg := r.ranges[r.ri]
		if rg.Off >= end {
			break
		}
		from, to := max(rg.Off, seg.off), min(rg.Off+rg.Len, end)
		if from < to {
			m, err := io.ReadFull(r.data, buf[from-seg.off:to-seg.off])
			r.read += int64(m)
			if err != nil {
				return fmt.Errorf("patch data: %w", err)
			}
		}
		if rg.Off+rg.Len > end {
			break // continues in the next segment
		}
		r.ri++
	}
	r.buf = buf
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
