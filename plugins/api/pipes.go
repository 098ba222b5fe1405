package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Entries through pipes. A host that starts a plugin hands it one end of a
// unix socket pair (its file descriptor is named by EnvPipes). A backup entry
// then travels through a pipe instead of the gRPC stream: the plugin passes
// the pipe's read end to the host over that socket (SCM_RIGHTS) under a
// number, names the number in the entry's header, writes the bytes (or has a
// tool such as pg_dump write them straight into the pipe) and, once the
// pipe is closed, sends the entry's end as usual. The host reads the pipe
// itself: the bytes cross neither the plugin's memory (when a tool writes
// them) nor gRPC's framing, flow control and extra copies. Entries with file
// records stay on the stream, where marks and bytes keep their order.

// EnvPipes names the environment variable that tells a plugin which
// inherited file descriptor is its end of the host's pipe socket.
const EnvPipes = "AMBER_PLUGIN_PIPES"

// pipeSize is what each pipe is grown to (Linux's default is 64 KiB); a
// best effort, a smaller pipe only costs more wake-ups.
const pipeSize = 1 << 20

// pipeWait bounds how long a receiver waits for a pipe a header announced.
const pipeWait = 30 * time.Second

// Pipes passes pipe ends between a host and its plugin over a unix socket,
// each under a number its sender picks. The host creates a pair with
// NewPipes; the plugin opens its end with the descriptor in EnvPipes.
type Pipes struct {
	conn *net.UnixConn

	sendMu sync.Mutex
	next   uint64

	mu      sync.Mutex
	got     map[uint64]received
	arrived chan struct{} // closed (and replaced) when a file arrives or the socket ends
	err     error         // why the socket ended
}

// received is a pipe end the other side passed, until it is taken.
type received struct {
	f  *os.File
	at time.Time
}

// NewPipes creates the socket pair a host gives a plugin: the host's Pipes,
// and the plugin's end, to pass as one of the process's ExtraFiles (and
// close once the process started) with EnvPipes naming its descriptor.
func NewPipes() (*Pipes, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pipe socket: %w", err)
	}
	p, err := pipesFromFile(os.NewFile(uintptr(fds[0]), "amber pipe socket"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return p, os.NewFile(uintptr(fds[1]), "amber plugin pipe socket"), nil
}

// pipesFromEnv opens the plugin's end of the host's pipe socket, or returns
// nil when the host gave none (entries then travel on the gRPC stream).
func pipesFromEnv() *Pipes {
	v := os.Getenv(EnvPipes)
	if v == "" {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		slog.Warn("ignoring a malformed pipe socket descriptor; entries go through the gRPC stream", "env", EnvPipes)
		return nil
	}
	// No tool the plugin starts may inherit the socket.
	unix.CloseOnExec(fd)
	p, err := pipesFromFile(os.NewFile(uintptr(fd), "amber pipe socket"))
	if err != nil {
		slog.Warn("the host's pipe socket is unusable; entries go through the gRPC stream", "error", err)
		return nil
	}
	return p
}

func pipesFromFile(f *os.File) (*Pipes, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("pipe socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("pipe socket: a %T, not a unix socket", c)
	}
	p := &Pipes{conn: uc, got: map[uint64]received{}, arrived: make(chan struct{})}
	go p.receive()
	return p, nil
}

// Close closes the socket and every received file not yet taken.
func (p *Pipes) Close() error {
	err := p.conn.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, r := range p.got {
		r.f.Close()
		delete(p.got, n)
	}
	return err
}

// pipe creates a pipe, passes its read end to the other side and returns
// the write end with the number it was passed under.
func (p *Pipes) pipe() (*os.File, uint64, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	if rc, err := w.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
	n, err := p.send(r)
	if err != nil {
		w.Close()
		return nil, 0, err
	}
	return w, n, nil
}

// send passes f to the other side and returns its number.
func (p *Pipes) send(f *os.File) (uint64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.next++
	var msg [8]byte
	binary.LittleEndian.PutUint64(msg[:], p.next)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, _, serr = p.conn.WriteMsgUnix(msg[:], unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("pass a pipe: %w", serr)
	}
	return p.next, nil
}

// receive keeps what the other side passes until take claims it.
func (p *Pipes) receive() {
	err := p.receiveLoop()
	p.mu.Lock()
	p.err = err
	close(p.arrived)
	p.mu.Unlock()
}

func (p *Pipes) receiveLoop() error {
	raw, err := p.conn.SyscallConn()
	if err != nil {
		return err
	}
	msg := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		var n, oobn int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), msg, oob, unix.MSG_CMSG_CLOEXEC)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		if n == 0 && oobn == 0 {
			return io.EOF
		}
		fds, err := receivedFDs(oob[:oobn])
		if err != nil || n != 8 || len(fds) != 1 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("pipe socket: a malformed message (%d bytes, %d descriptors)", n, len(fds))
		}
		// Nonblocking, so the runtime's poller serves it: a Close from
		// another goroutine ends a Read blocked on it.
		if err := unix.SetNonblock(fds[0], true); err != nil {
			unix.Close(fds[0])
			return err
		}
		f := os.NewFile(uintptr(fds[0]), "amber entry pipe")
		now := time.Now()
		p.mu.Lock()
		// A pipe never taken (its call ended before it read the header
		// naming it) is closed once no receiver would wait for it.
		for n, r := range p.got {
			if now.Sub(r.at) > 2*pipeWait {
				r.f.Close()
				delete(p.got, n)
			}
		}
		p.got[binary.LittleEndian.Uint64(msg[:8])] = received{f: f, at: now}
		close(p.arrived)
		p.arrived = make(chan struct{})
		p.mu.Unlock()
	}
}

func receivedFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// take returns the file passed under number n, waiting for it to arrive.
func (p *Pipes) take(ctx context.Context, n uint64) (*os.File, error) {
	timer := time.NewTimer(pipeWait)
	defer timer.Stop()
	for {
		p.mu.Lock()
		if r, ok := p.got[n]; ok {
			delete(p.got, n)
			p.mu.Unlock()
			return r.f, nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return nil, fmt.Errorf("pipe %d never arrived: the pipe socket ended: %w", n, err)
		}
		arrived := p.arrived
		p.mu.Unlock()
		select {
		case <-arrived:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, fmt.Errorf("pipe %d was announced but not passed within %s", n, pipeWait)
		}
	}
}

// callPipe closes the pipe a call is writing into once the call has ended
// on the other side, so a write the other side will never read fails
// instead of blocking.
type callPipe struct {
	mu    sync.Mutex
	f     *os.File
	ended bool
}

// open records f as the call's current pipe; false when the call ended.
func (c *callPipe) open(f *os.File) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.f = f
	return !c.ended
}

func (c *callPipe) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	if c.f != nil {
		c.f.Close()
	}
}

// PipeFile is implemented by the writer an EntrySink's Create returns when
// the entry travels through a pipe to the host: a child process given the
// file as its standard output writes to the host directly. The sender then
// cannot count the entry's bytes (its end says -1; the host counts). Close
// the writer once the process has exited.
type PipeFile interface {
	PipeFile() *os.File
}

// pipeWriter is an entry's write end of a pipe to the other side.
type pipeWriter struct {
	f         *os.File
	sink      *frameSink
	name      string
	n         int64
	uncounted bool
	closed    bool
	err       error // the first failed write: the reader is gone
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(b)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("entry %s: %w", w.name, err)
		return n, w.err
	}
	return n, nil
}

func (w *pipeWriter) failed() error { return w.err }

// MarkFile refuses: entries with file records never travel through pipes.
func (w *pipeWriter) MarkFile(m FileMark) error {
	return fmt.Errorf("entry %s: file mark %q, but the host did not ask for file records", w.name, m.Key)
}

func (w *pipeWriter) PipeFile() *os.File {
	w.uncounted = true
	return blocking(w.f)
}

func isFile(r io.Reader) bool {
	_, ok := r.(*os.File)
	return ok
}

// blocking puts f in blocking mode, which a child process expects of its
// standard input and output; f's own reads and writes still work (they
// hold a thread while they wait).
func blocking(f *os.File) *os.File {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), false) })
	}
	return f
}

// readFrom writes everything r yields into the pipe.
func (w *pipeWriter) readFrom(ctx context.Context, r io.Reader) error {
	if wt, ok := r.(io.WriterTo); ok && !isFile(r) {
		// A source that holds its bytes in buffers already (a restore
		// decoding the repository) writes them to the pipe itself,
		// saving a copy through buf. (An *os.File's WriteTo would copy
		// through 32 KiB.)
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := wt.WriteTo(w)
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
	}
}

// Close closes the pipe, which ends the host's read, then ends the entry.
func (w *pipeWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	w.sink.open, w.sink.pipe = false, nil
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	n := w.n
	if w.uncounted {
		n = -1
	}
	if err := w.sink.end(n); err != nil {
		return fmt.Errorf("entry %s: %w", w.name, err)
	}
	return nil
}

// abort closes the pipe without ending the entry: the host reads the
// pipe's end, then the call's error.
func (w *pipeWriter) abort() {
	if !w.closed {
		w.closed = true
		w.f.Close()
	}
}

// pipeReader reads an entry from a pipe, then its end from the stream.
type pipeReader struct {
	f         *os.File
	what      string
	ctx       context.Context
	end       func() (int64, error) // the entry's end: the size the sender counted
	n         int64
	uncounted bool // a child process read the pipe (PipeFile)
	done      bool
	err       error
}

// PipeFile gives the pipe to a child process as its standard input; what
// the child leaves unread is drained before the next entry.
func (r *pipeReader) PipeFile() *os.File {
	r.uncounted = true
	return blocking(r.f)
}

func (r *pipeReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	k, err := r.f.Read(p)
	r.n += int64(k)
	switch {
	case err == nil:
		return k, nil
	case errors.Is(err, io.EOF):
		size, err := r.end()
		switch {
		case err != nil:
			r.err = err
		case size != -1 && !r.uncounted && size != r.n:
			r.err = fmt.Errorf("%s: sender counted %d bytes, received %d: %w", r.what, size, r.n, io.ErrUnexpectedEOF)
		default:
			r.done = true
			if k > 0 {
				return k, nil
			}
			return 0, io.EOF
		}
		return k, r.err
	case r.ctx.Err() != nil:
		r.err = r.ctx.Err()
	default:
		r.err = fmt.Errorf("%s: %w", r.what, err)
	}
	return k, r.err
}

func (r *pipeReader) drain() error {
	_, err := io.Copy(io.Discard, r)
	return err
}
