package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// ChunkSize bounds the data carried by one protocol message. With gRPC's
// flow control it bounds the memory a stream holds on either side.
const ChunkSize = 1 << 20

// MaxRequestSize bounds one message to a plugin: a BackupRequest with the
// previous backup's file records is the largest. A host leaves Previous
// out rather than send more.
const MaxRequestSize = 64 << 20

// chunkReader reads the data frames of one entry or segment. next returns
// either a data frame, or end=true with the size the sender counted.
type chunkReader struct {
	next func() (data []byte, end bool, size int64, err error)
	what string // "entry base.tar", for errors

	buf  []byte
	n    int64
	done bool
	err  error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		data, end, size, err := r.next()
		switch {
		case err != nil:
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%s: %w", r.what, io.ErrUnexpectedEOF)
			}
			r.err = err
			return 0, err
		case end:
			if size != r.n {
				r.err = fmt.Errorf("%s: sender counted %d bytes, received %d: %w", r.what, size, r.n, io.ErrUnexpectedEOF)
				return 0, r.err
			}
			r.done = true
			return 0, io.EOF
		}
		r.buf = data
		r.n += int64(len(data))
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// drain reads what is left, so the stream is positioned after the end frame.
func (r *chunkReader) drain() error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// chunkWriter buffers writes into frames of at most ChunkSize bytes.
type chunkWriter struct {
	send func([]byte) error
	buf  []byte
	n    int64
	err  error
}

func newChunkWriter(send func([]byte) error) *chunkWriter {
	return &chunkWriter{send: send, buf: make([]byte, 0, ChunkSize)}
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		written += k
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *chunkWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	// The message is serialized before send returns, so buf is reusable.
	if err := w.send(w.buf); err != nil {
		w.err = err
		return err
	}
	w.n += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// readFrom sends everything r yields in full frames.
func (w *chunkWriter) readFrom(ctx context.Context, r io.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := io.ReadFull(r, w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+k]
		if len(w.buf) == cap(w.buf) {
			if ferr := w.flush(); ferr != nil {
				return ferr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return w.flush()
		case err != nil:
			return err
		}
	}
}

// frameSink implements EntrySink over a function sending protocol frames.
type frameSink struct {
	header func(e Entry, pipe uint64) error
	data   func([]byte) error
	end    func(size int64) error
	mark   func(FileMark) error // nil: the host takes no file marks
	// files, with mark, carries files the host reads itself (FileSender):
	// each is passed over it and named by fileData.
	files    *Pipes
	fileData func(n uint64, off, length int64) error
	// pipes, when set, carries each entry's bytes through a pipe to the
	// receiver instead of data frames (never together with mark).
	pipes *Pipes
	call  *callPipe // with pipes: closes the open entry's pipe when the call ends
	open  bool
	pipe  *pipeWriter // the open entry's pipe
}

// entryFiller is an entry's writer, on the stream (entryWriter) or through
// a pipe (pipeWriter).
type entryFiller interface {
	io.WriteCloser
	// readFrom writes everything r yields into the entry.
	readFrom(ctx context.Context, r io.Reader) error
	// failed is the write error that ended the entry (the receiver is
	// gone), or nil.
	failed() error
}

func (s *frameSink) Entry(ctx context.Context, e Entry, r io.Reader) error {
	w, err := s.create(e)
	if err != nil {
		return err
	}
	if err := w.readFrom(ctx, r); err != nil {
		return fmt.Errorf("entry %s: %w", e.Name, err)
	}
	return w.Close()
}

func (s *frameSink) Create(_ context.Context, e Entry) (io.WriteCloser, error) {
	return s.create(e)
}

func (s *frameSink) create(e Entry) (entryFiller, error) {
	if s.open {
		return nil, fmt.Errorf("entry %s started before the previous entry was closed", e.Name)
	}
	if e.Name == "" {
		return nil, errors.New("entry without a name")
	}
	if s.pipes != nil && s.mark == nil {
		f, n, err := s.pipes.pipe()
		if err != nil {
			return nil, fmt.Errorf("entry %s: %w", e.Name, err)
		}
		if s.call != nil && !s.call.open(f) {
			f.Close()
			return nil, fmt.Errorf("entry %s: the plugin ended the call", e.Name)
		}
		if err := s.header(e, n); err != nil {
			f.Close()
			return nil, fmt.Errorf("entry %s: %w", e.Name, err)
		}
		s.open = true
		s.pipe = &pipeWriter{f: f, sink: s, name: e.Name}
		return s.pipe, nil
	}
	if err := s.header(e, 0); err != nil {
		return nil, fmt.Errorf("entry %s: %w", e.Name, err)
	}
	s.open = true
	w := &entryWriter{chunkWriter: newChunkWriter(s.data), sink: s, name: e.Name}
	if s.mark != nil && s.files != nil {
		return &fileEntryWriter{w}, nil
	}
	return w, nil
}

// abort closes an entry's pipe left open by an engine that returned: the
// receiver reads the pipe's end, then the call's status.
func (s *frameSink) abort() {
	if s.pipe != nil {
		s.pipe.abort()
		s.pipe = nil
	}
}

type entryWriter struct {
	*chunkWriter
	sink   *frameSink
	name   string
	closed bool
}

// MarkFile implements FileMarker: the bytes written so far go out first.
func (w *entryWriter) MarkFile(m FileMark) error {
	if w.closed {
		return fmt.Errorf("entry %s: file mark after the entry was closed", w.name)
	}
	if w.sink.mark == nil {
		return fmt.Errorf("entry %s: file mark %q, but the host did not ask for file records", w.name, m.Key)
	}
	if m.Reuse && (m.Key == "" || m.Length <= 0) {
		return fmt.Errorf("entry %s: a reused file record needs a key and a length", w.name)
	}
	if err := checkMark(m); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	if err := w.sink.mark(m); err != nil {
		w.err = err
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	return nil
}

func (w *entryWriter) failed() error { return w.err }

func (w *entryWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	w.sink.open = false
	if err := w.flush(); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	if err := w.sink.end(w.n); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	return nil
}

var _ FileMarker = (*entryWriter)(nil)

// FileSender is implemented by the entry writers of a backup with file
// records when the host reads files itself (both ends set up the pipe
// socket, and the host said so in its request). SendFile writes length
// bytes of f, from offset off, into the entry without reading them: f is
// passed to the host, which reads them. Past f's end (it shrank) the host
// reads zeros. The caller may close f once SendFile returns.
type FileSender interface {
	SendFile(f *os.File, off, length int64) error
}

// fileEntryWriter is an entryWriter that also passes files.
type fileEntryWriter struct{ *entryWriter }

func (w *fileEntryWriter) SendFile(f *os.File, off, length int64) error {
	switch {
	case w.closed:
		return fmt.Errorf("entry %s: file sent after the entry was closed", w.name)
	case off < 0 || length <= 0:
		return fmt.Errorf("entry %s: file %s: offset %d, length %d", w.name, f.Name(), off, length)
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	n, err := w.sink.files.send(f)
	if err != nil {
		w.err = err
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	if err := w.sink.fileData(n, off, length); err != nil {
		w.err = err
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	w.n += length
	return nil
}

var _ FileSender = (*fileEntryWriter)(nil)

// frame is one message of an entry stream: a header (with the number of
// the pipe carrying its bytes, if any), data, or an end with its size.
type frame struct {
	header *Entry
	pipe   uint64
	data   []byte
	end    bool
	size   int64
}

// frameSource implements EntrySource over a function receiving frames.
// recv returns one frame, or err (io.EOF at the end of the stream).
type frameSource struct {
	recv  func() (frame, error)
	pipes *Pipes // receives the pipes headers name; nil: none offered
	cur   interface{ drain() error }
	pipe  *pipeReader // the current entry's pipe, closed when the next starts
}

func (s *frameSource) Next(ctx context.Context) (Entry, io.Reader, error) {
	if s.cur != nil {
		err := s.cur.drain()
		s.cur = nil
		s.closePipe()
		if err != nil {
			return Entry{}, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, nil, err
	}
	f, err := s.recv()
	if err != nil {
		return Entry{}, nil, err
	}
	if f.header == nil {
		return Entry{}, nil, errors.New("protocol error: data outside an entry")
	}
	e := *f.header
	if f.pipe != 0 {
		if s.pipes == nil {
			return Entry{}, nil, fmt.Errorf("protocol error: entry %s sent through a pipe this plugin did not offer to read", e.Name)
		}
		file, err := s.pipes.take(ctx, f.pipe)
		if err != nil {
			return Entry{}, nil, fmt.Errorf("entry %s: %w", e.Name, err)
		}
		s.pipe = &pipeReader{f: file, what: "entry " + e.Name, ctx: ctx, end: func() (int64, error) {
			f, err := s.recv()
			switch {
			case err != nil:
				return 0, err
			case !f.end:
				return 0, fmt.Errorf("protocol error: entry %s not ended after its pipe", e.Name)
			}
			return f.size, nil
		}}
		s.cur = s.pipe
		return e, s.pipe, nil
	}
	cr := &chunkReader{what: "entry " + e.Name, next: func() ([]byte, bool, int64, error) {
		f, err := s.recv()
		if err == nil && f.header != nil {
			err = fmt.Errorf("protocol error: entry %s started inside entry %s", f.header.Name, e.Name)
		}
		return f.data, f.end, f.size, err
	}}
	s.cur = cr
	return e, cr, nil
}

// closePipe closes the current entry's pipe: a sender still writing gets
// an error rather than blocking.
func (s *frameSource) closePipe() {
	if s.pipe != nil {
		s.pipe.f.Close()
		s.pipe = nil
	}
}

// checkMark checks what a file mark says of a patch.
func checkMark(m FileMark) error {
	if m.Base == "" {
		if m.Keep != 0 || len(m.Ranges) > 0 {
			return fmt.Errorf("file record %q has patch ranges but no base", m.Key)
		}
		return nil
	}
	switch {
	case m.Reuse || m.Key == "":
		return fmt.Errorf("patch of file record %q needs a key of its own and no reuse", m.Base)
	case m.Length < 0 || m.Keep < 0:
		return fmt.Errorf("patch record %q: negative length", m.Key)
	case PatchSize(m.Ranges, m.Length) < 0:
		return fmt.Errorf("patch record %q: ranges out of order, overlapping, empty or past its length %d", m.Key, m.Length)
	}
	return nil
}
