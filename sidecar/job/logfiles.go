package job

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Opener opens what a job needs, when it needs it: the log-file commands
// serve many calls from their spool without opening either. Repository and
// Engine may run at the same time, one call of each.
type Opener interface {
	Repository(ctx context.Context) (*repo.Repository, error)
	Engine(ctx context.Context, name string) (api.Engine, error)
}

// LogFetch says how a restored server fetches archived log: it runs the
// amber binary Exe against the repository RepoURL (the server's log command,
// PostgreSQL's restore_command).
type LogFetch struct {
	Exe     string
	RepoURL string
	// Expires bounds the restore's credential if recovery never ends
	// (default 7 days); prune removes it after that.
	Expires time.Duration
}

// logAccess is what one restore gives its server: a directory beside the
// data directory (never inside it, so later backups of the copy do not
// carry it) holding a credential for this restore alone — a random key
// slot of the repository, removed when recovery ends — and a spool for
// log fetched ahead.
type logAccess struct {
	r                   *repo.Repository
	dir, keyFile, spool string
	slot                string
	secret              []byte
	command, done       []string
}

func (f *LogFetch) prepare(ctx context.Context, r *repo.Repository, engine, stream, dataDir string, m *repo.Manifest, now time.Time) (*logAccess, error) {
	dir := dataDir + ".amber"
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%s exists, left by an earlier restore into %s: remove both and restore again", dir, dataDir)
	}
	a := &logAccess{r: r, dir: dir, keyFile: filepath.Join(dir, "key"), spool: filepath.Join(dir, "spool")}
	exp := f.Expires
	if exp <= 0 {
		exp = 7 * 24 * time.Hour
	}
	slot, secret, err := r.AddRandomKey(ctx, fmt.Sprintf("log fetch for the restore of %s into %s", m.ID.Short(), dataDir), now.Add(exp))
	if err != nil {
		return nil, fmt.Errorf("add a key slot for the restored server: %w", err)
	}
	a.slot, a.secret = slot, secret
	common := []string{"--repo", f.RepoURL, "--key-slot", slot, "--password-file", a.keyFile, "--cache-dir", "-", "--spool", a.spool}
	a.command = append([]string{f.Exe, "log-fetch", "--engine", engine, "--stream", stream}, common...)
	a.done = append([]string{f.Exe, "log-fetch", "--done"}, common...)
	return a, nil
}

// grant creates the directory, the credential and the spool, owned by the
// user that runs the restored server.
func (a *logAccess) grant(_ context.Context, owner *api.FileOwner) error {
	if err := os.Mkdir(a.dir, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(a.spool, 0o700); err != nil {
		return err
	}
	if err := writeExclusive(a.keyFile, a.secret, 0o400); err != nil {
		return err
	}
	if owner != nil {
		for _, p := range []string{a.dir, a.spool, a.keyFile} {
			if err := os.Lchown(p, int(owner.UID), int(owner.GID)); err != nil {
				return err
			}
		}
	}
	return nil
}

// revoke removes the key slot and what grant created.
func (a *logAccess) revoke(ctx context.Context) {
	_ = a.r.RemoveKey(ctx, a.slot)
	_ = os.RemoveAll(a.dir)
}

// writeExclusive creates path, which must not exist and is never followed
// if it is a link, and writes data to it.
func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscallNoFollow, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LogFileFetch asks for one archived log file by the server's name for it.
type LogFileFetch struct {
	Engine   string
	Stream   string
	Name     string
	Dest     string
	Spool    string            // optional: a directory of fetched-ahead files
	Settings map[string]string // what the plugin put on the command line
	Ahead    int               // how many following segments to fetch ahead into Spool
}

// ErrNoLogFile means the archive holds no file by the name asked for; a
// server probing for optional files (PostgreSQL's next timeline history)
// gets it routinely.
var ErrNoLogFile = errors.New("not in the archive")

// FetchLogFile copies one archived log file to f.Dest: from the spool when
// an earlier call fetched it ahead, else from the repository, fetching
// the next f.Ahead complete segments of the epoch into the spool on the way.
func FetchLogFile(ctx context.Context, o Opener, f LogFileFetch) error {
	if f.Spool != "" && validSpoolName(f.Name) {
		p := filepath.Join(f.Spool, f.Name)
		if err := os.Rename(p, f.Dest); err == nil {
			return nil
		}
	}
	// The repository opens while the plugin starts: the server waits on
	// every call that misses the spool (a probe for a history file that
	// does not exist among them), and the two take about as long.
	type opened struct {
		r   *repo.Repository
		err error
	}
	repoCh := make(chan opened, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		r, err := o.Repository(rctx)
		repoCh <- opened{r, err}
	}()
	eng, err := o.Engine(ctx, f.Engine)
	if err != nil {
		cancel() // a storage that does not answer must not hold up the plugin's error
	}
	ro := <-repoCh // before any return: the opener is not used concurrently after this
	if err != nil {
		return err
	}
	lf, err := eng.DescribeLogFile(ctx, api.LogFileQuery{Name: f.Name, Settings: f.Settings})
	if err != nil {
		return err
	}
	if lf.Ignore {
		return fmt.Errorf("%s: %w", f.Name, ErrNoLogFile)
	}
	want := lf.Segment
	meta := want.Start.Offset == want.End.Offset
	r, err := ro.r, ro.err
	if err != nil {
		return err
	}
	// List only the file's own range and the files fetched ahead after it,
	// never the whole stream: a restore fetches thousands of files.
	from, to := want.Start.Offset, want.End.Offset
	if meta {
		to = from + 1
	} else if f.Spool != "" && f.Ahead > 0 {
		size := want.End.Offset - want.Start.Offset
		if ahead := uint64(f.Ahead) * size; ahead/size == uint64(f.Ahead) && to+ahead >= to {
			to += ahead
		} else {
			to = math.MaxUint64
		}
	}
	segs, err := r.SegmentsStarting(ctx, f.Stream, want.Start.Epoch, from, max(to, from+1))
	if err != nil {
		return err
	}
	at := -1
	for i, s := range segs { // complete before partial, longer first
		if s.Epoch == want.Start.Epoch && s.Start == want.Start.Offset && (s.Start == s.End) == meta {
			at = i
			break
		}
	}
	if at < 0 {
		return fmt.Errorf("%s: %w", f.Name, ErrNoLogFile)
	}
	if segs[at].Partial && !meta {
		// Partial pieces: each flush stored the bytes since the previous one.
		return fetchPieces(ctx, r, segs, segs[at], want, f.Dest)
	}
	if err := fetchSegment(ctx, r, segs[at], f.Dest); err != nil {
		return err
	}
	if f.Spool != "" && f.Ahead > 0 && !meta {
		fetchAhead(ctx, r, segs[at+1:], segs[at], f.Spool, f.Ahead)
	}
	return nil
}

// fetchSegment writes a segment's bytes, zero-filled to the size the plugin
// recorded, to dest atomically.
func fetchSegment(ctx context.Context, r *repo.Repository, s repo.Segment, dest string) error {
	_, data, err := loadServed(ctx, r, s)
	if err != nil {
		return err
	}
	return place(dest+".amber-"+randomSuffix(), dest, data)
}

// fetchPieces puts together the log file want from the partial segment
// first (the longest starting at want's start) and the pieces that continue
// it: partial segments of the same name starting inside want's range, each
// holding the bytes from its start offset on (a plugin that stores only what
// is new at each flush). At each step the piece reaching furthest is taken,
// up to the first hole. The bytes, zero-filled to the size recorded, go to
// dest.
func fetchPieces(ctx context.Context, r *repo.Repository, segs []repo.Segment, first repo.Segment, want api.Segment, dest string) error {
	full, data, err := r.GetSegment(ctx, first.ObjectName())
	if err != nil {
		return err
	}
	name, size, cur := full.Name, archive.FileSize(full), full.End
	for want.End.Offset > want.Start.Offset {
		var best *repo.Segment
		for i, s := range segs {
			if s.Epoch == first.Epoch && s.Partial && s.Start > first.Start && s.Start <= cur && s.End > cur &&
				s.Start < want.End.Offset && (best == nil || s.End > best.End) {
				best = &segs[i]
			}
		}
		if best == nil {
			break
		}
		piece, b, err := r.GetSegment(ctx, best.ObjectName())
		if err != nil {
			return err
		}
		if piece.Name != name {
			break
		}
		if uint64(len(b)) != piece.End-piece.Start {
			return fmt.Errorf("log segment %s holds %d bytes for the %d positions it names", piece.ObjectName(), len(b), piece.End-piece.Start)
		}
		data = append(data, b[cur-piece.Start:]...)
		cur = piece.End
	}
	if n := int64(len(data)); size > n {
		data = append(data, make([]byte, size-n)...)
	}
	return place(dest+".amber-"+randomSuffix(), dest, data)
}

// loadServed reads a segment and zero-fills it to the size the plugin
// recorded: the bytes the engine reads it back as.
func loadServed(ctx context.Context, r *repo.Repository, s repo.Segment) (repo.Segment, []byte, error) {
	full, data, err := r.GetSegment(ctx, s.ObjectName())
	if err != nil {
		return full, nil, err
	}
	if n := archive.FileSize(full); n > int64(len(data)) {
		data = append(data, make([]byte, n-int64(len(data)))...)
	}
	return full, data, nil
}

// place writes data to the new file tmp and renames it to dest.
func place(tmp, dest string, data []byte) error {
	if err := writeExclusive(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// fetchAhead fetches, four at a time, the complete segments that follow
// prev without a hole, into the spool under their engine names. Failures
// only cost a later fetch from the repository.
func fetchAhead(ctx context.Context, r *repo.Repository, next []repo.Segment, prev repo.Segment, spool string, n int) {
	var todo []repo.Segment
	end := prev.End
	for _, s := range next {
		if len(todo) == n || s.Epoch != prev.Epoch || s.Start != end {
			break
		}
		if s.Partial { // a partial one may still grow; fetch it when asked
			break
		}
		todo = append(todo, s)
		end = s.End
	}
	var wg sync.WaitGroup
	var i atomic.Int32
	for range min(4, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int(i.Add(1)) - 1; k < len(todo); k = int(i.Add(1)) - 1 {
				full, data, err := loadServed(ctx, r, todo[k])
				if err != nil || !validSpoolName(full.Name) {
					continue
				}
				dest := filepath.Join(spool, full.Name)
				if _, err := os.Lstat(dest); err == nil {
					continue
				}
				_ = place(filepath.Join(spool, "."+full.Name+"."+randomSuffix()), dest, data)
			}
		}()
	}
	wg.Wait()
}

// validSpoolName accepts the engine names that are safe as a file name in
// the spool.
func validSpoolName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00") && !strings.HasPrefix(name, ".")
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DoneFetching ends a restored server's access to archived log once its
// recovery has ended: it removes the restore's random key slot (the one the
// repository is opened with), then the credential file and the spool. With
// the credential file already gone there is nothing left to do.
func DoneFetching(ctx context.Context, o Opener, keyFile, spool string) error {
	if _, err := os.Lstat(keyFile); errors.Is(err, fs.ErrNotExist) {
		return os.RemoveAll(spool)
	}
	r, err := o.Repository(ctx)
	if err == nil {
		err = r.RemoveOwnRandomKey(ctx)
	}
	if err != nil {
		return fmt.Errorf("revoke the restore's key slot: %w", err)
	}
	var errs []error
	for _, p := range []string{spool, keyFile} {
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PushLogFile archives one log file the server hands over (PostgreSQL's
// archive_command) and returns once it is durable. Archiving the same file
// twice is fine when its content is equal; different content under the same
// name is refused (two servers writing one stream).
func PushLogFile(ctx context.Context, o Opener, engine, stream, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	eng, err := o.Engine(ctx, engine)
	if err != nil {
		return err
	}
	lf, err := eng.DescribeLogFile(ctx, api.LogFileQuery{Name: filepath.Base(path), Path: path, Size: st.Size()})
	if err != nil {
		return err
	}
	if lf.Ignore {
		return nil
	}
	seg, err := archive.Describe(stream, lf.Segment.SegmentHeader, lf.Segment.SegmentTrailer)
	if err != nil {
		return err
	}
	if st.Size() > archive.MaxSegment {
		return fmt.Errorf("%s is %d bytes, more than a log segment may hold (%d)", path, st.Size(), archive.MaxSegment)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if seg.Start != seg.End {
		// The file's last write bounds the commit times inside it.
		seg.LastTime = st.ModTime().UTC()
	}
	r, err := o.Repository(ctx)
	if err != nil {
		return err
	}
	// A complete segment is created, never overwritten: PutSegment accepts
	// the same content again and refuses different content. A partial one
	// is compared here, as PutSegment would replace it.
	if seg.Partial {
		if _, old, err := r.GetSegment(ctx, seg.ObjectName()); err == nil {
			if bytes.Equal(old, data) {
				return nil
			}
			return fmt.Errorf("%s is already archived with different content; refusing to overwrite (is a second server archiving into stream %s?)", seg.Name, stream)
		}
	}
	return r.PutSegment(ctx, seg, data)
}

// countWriter counts what passes through it.
type countWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
