package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/apitest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// connect serves e in-process over gRPC, as a plugin would, with the pipe
// socket a host gives its plugins (backup entries travel through pipes), and
// returns the host's client.
func connect(t testing.TB, e api.Engine) *api.Client {
	t.Helper()
	host, child, err := api.NewPipes()
	if err != nil {
		t.Fatal(err)
	}
	plugin, err := api.PipesFromFile(child)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		host.Close()
		plugin.Close()
	})
	c := serve(t, e, plugin)
	c.UsePipes(host, true)
	return c
}

// connectStream is connect without pipes: every entry on the gRPC stream.
func connectStream(t testing.TB, e api.Engine) *api.Client {
	t.Helper()
	return serve(t, e, nil)
}

func serve(t testing.TB, e api.Engine, pipes *api.Pipes) *api.Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := api.NewGRPCServer(nil)
	if err := api.RegisterPipes(s, e, pipes); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return api.NewClient(conn)
}

func TestPatternIsDeterministic(t *testing.T) {
	want := apitest.PatternSum(7, 100003)
	for _, bufSize := range []int{1, 3, 8, 13, 4096, 1 << 20} {
		h := sha256.New()
		if _, err := io.CopyBuffer(onlyWriter{h}, onlyReader{apitest.Pattern(7, 100003)}, make([]byte, bufSize)); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Fatalf("buffer %d: sum %s, want %s", bufSize, got, want)
		}
	}
}

type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

func TestPositionOrder(t *testing.T) {
	a := api.Position{Token: []byte("x"), Text: "1/0/10", Epoch: 1, Offset: 10}
	b := api.Position{Token: []byte("y"), Text: "1/0/100", Epoch: 1, Offset: 100}
	c := api.Position{Token: []byte("z"), Text: "2/0/5", Epoch: 2, Offset: 5}
	if a.Compare(b) >= 0 || b.Compare(c) >= 0 || c.Compare(a) <= 0 || a.Compare(a) != 0 {
		t.Fatal("Compare does not order (epoch, offset) pairs")
	}
	if !(api.Position{}).IsZero() || a.IsZero() {
		t.Fatal("IsZero")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	tg := api.Target{DSN: "postgres://u:hunter2@h/db"}
	for _, s := range []string{fmt.Sprint(tg), fmt.Sprintf("%v %+v %#v %s", tg, tg, tg, tg.DSN)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password printed: %s", s)
		}
	}
}

func TestInfoProbe(t *testing.T) {
	c := connect(t, apitest.NewFake())
	ctx := context.Background()
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Engine != "fake" || !info.Has(api.LogicalDump) || info.Has(api.PhysicalRestore) {
		t.Fatalf("info = %+v", info)
	}
	p, err := c.Probe(ctx, api.Target{DataDir: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Role != api.RolePrimary || !p.Healthy || p.Position.Compare(apitest.Pos(42)) != 0 || p.Position.Text != "fake/42" {
		t.Fatalf("probe = %+v", p)
	}
}

// hashSink records the SHA-256 of every entry it receives.
type hashSink struct {
	sums  map[string]string
	sizes map[string]int64
	fail  error
}

func newHashSink() *hashSink { return &hashSink{sums: map[string]string{}, sizes: map[string]int64{}} }

func (s *hashSink) Entry(_ context.Context, e api.Entry, r io.Reader) error {
	if s.fail != nil {
		return s.fail
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	s.sums[e.Name], s.sizes[e.Name] = hex.EncodeToString(h.Sum(nil)), n
	return nil
}

func (s *hashSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("host sinks are read through Entry")
}

func TestBackupStreams(t *testing.T) {
	t.Run("pipes", func(t *testing.T) { testBackupStreams(t, connect(t, apitest.NewFake())) })
	t.Run("stream", func(t *testing.T) { testBackupStreams(t, connectStream(t, apitest.NewFake())) })
}

func testBackupStreams(t *testing.T, c *api.Client) {
	const size = 3<<20 + 12345
	for name, call := range map[string]func(context.Context, api.BackupRequest, api.EntrySink) (api.BackupResult, error){
		"logical":  c.LogicalDump,
		"physical": c.PhysicalBackup,
	} {
		t.Run(name, func(t *testing.T) {
			sink := newHashSink()
			res, err := call(context.Background(), api.BackupRequest{Options: map[string]string{
				"entries": "3", "size": fmt.Sprint(size), "seed": "5"}}, sink)
			if err != nil {
				t.Fatal(err)
			}
			for i := range int64(3) {
				name := fmt.Sprintf("entry-%d", i)
				if sink.sizes[name] != size || sink.sums[name] != apitest.PatternSum(5+i, size) {
					t.Errorf("%s: %d bytes, sum %s; want %d bytes, sum %s", name, sink.sizes[name], sink.sums[name], size, apitest.PatternSum(5+i, size))
				}
			}
			if res.Consistent.Compare(apitest.Pos(200)) != 0 || res.ConsistentTime.IsZero() || res.StartTime.After(res.ConsistentTime) {
				t.Errorf("result = %+v", res)
			}
			if len(res.Files) != 1 || string(res.Files[0].Content) != "fake label" {
				t.Errorf("files = %+v", res.Files)
			}
		})
	}
}

// TestArchivedReachesTheEngine: BackupRequest.Archived and
// FreezeRequest.Archived cross the wire whole (the fake reports its
// positions in the archived end's epoch).
func TestArchivedReachesTheEngine(t *testing.T) {
	c := connect(t, apitest.NewFake())
	end := api.Position{Epoch: 3, Offset: 77, Token: []byte{0, 1, 2}, Text: "3/77"}
	res, err := c.LogicalDump(context.Background(), api.BackupRequest{Archived: end, Options: map[string]string{"size": "10"}}, newHashSink())
	if err != nil {
		t.Fatal(err)
	}
	if res.Consistent.Epoch != 3 || res.Start.Epoch != 3 {
		t.Errorf("dump given an archived end in epoch 3: positions %s, %s", res.Start, res.Consistent)
	}
	res, err = c.LogicalDump(context.Background(), api.BackupRequest{Options: map[string]string{"size": "10"}}, newHashSink())
	if err != nil || res.Consistent.Epoch != apitest.Pos(200).Epoch {
		t.Errorf("dump without an archived end: %s, %v", res.Consistent, err)
	}
	fr, err := c.Freeze(context.Background(), api.FreezeRequest{Lease: time.Minute, Archived: end})
	if err != nil {
		t.Fatal(err)
	}
	if fr.Position.Epoch != 3 {
		t.Errorf("freeze given an archived end in epoch 3: %s", fr.Position)
	}
	if _, err := c.Thaw(context.Background(), fr.LeaseID); err != nil {
		t.Fatal(err)
	}
}

func TestBackupSinkErrorStopsTheStream(t *testing.T) {
	c := connect(t, apitest.NewFake())
	sink := newHashSink()
	sink.fail = errors.New("bucket is full")
	_, err := c.LogicalDump(context.Background(), api.BackupRequest{}, sink)
	if err == nil || !strings.Contains(err.Error(), "bucket is full") {
		t.Fatalf("err = %v", err)
	}
}

// listSource yields Pattern entries.
type listSource struct {
	sizes []int64
	i     int
}

func (s *listSource) Next(context.Context) (api.Entry, io.Reader, error) {
	if s.i >= len(s.sizes) {
		return api.Entry{}, nil, io.EOF
	}
	i := s.i
	s.i++
	return api.Entry{Name: fmt.Sprintf("e%d", i)}, apitest.Pattern(int64(i), s.sizes[i]), nil
}

func TestLogicalRestore(t *testing.T) {
	t.Run("pipes", func(t *testing.T) { testLogicalRestore(t, connect(t, apitest.NewFake())) })
	t.Run("stream", func(t *testing.T) { testLogicalRestore(t, connectStream(t, apitest.NewFake())) })
}

func testLogicalRestore(t *testing.T, c *api.Client) {
	sizes := []int64{0, 1, 5 << 20, 777}
	res, err := c.LogicalRestore(context.Background(), api.RestoreRequest{Backup: api.BackupResult{Consistent: apitest.Pos(9)}}, &listSource{sizes: sizes})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		if got, want := res.Metadata[fmt.Sprintf("e%d", i)], apitest.PatternSum(int64(i), n); got != want {
			t.Errorf("entry e%d: plugin got sum %s, want %s", i, got, want)
		}
	}
	if res.Position.Compare(apitest.Pos(9)) != 0 {
		t.Errorf("position = %v", res.Position)
	}
}

func TestPanicBecomesError(t *testing.T) {
	c := connect(t, apitest.NewFake())
	_, err := c.Probe(context.Background(), api.Target{Settings: map[string]string{"panic": "probe exploded"}})
	if err == nil || !strings.Contains(err.Error(), "probe exploded") || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("err = %v", err)
	}
	_, err = c.LogicalDump(context.Background(), api.BackupRequest{Options: map[string]string{"size": "3000000", "panic": "dump exploded"}}, newHashSink())
	if err == nil || !strings.Contains(err.Error(), "dump exploded") {
		t.Fatalf("err = %v", err)
	}
	// The plugin still serves.
	if _, err := c.Probe(context.Background(), api.Target{}); err != nil {
		t.Fatal(err)
	}
}

func TestUnsupportedCapability(t *testing.T) {
	c := connect(t, apitest.NewFake())
	_, err := c.PhysicalRestore(context.Background(), api.RestoreRequest{}, &listSource{sizes: []int64{10}})
	if !errors.Is(err, api.ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	if want := "engine fake does not support physical_restore"; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
}

func TestFreezeLease(t *testing.T) {
	f := apitest.NewFake()
	c := connect(t, f)
	ctx := context.Background()

	fr, err := c.Freeze(ctx, api.FreezeRequest{Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Frozen(fr.LeaseID) || fr.ExpiresAt.Before(time.Now().Add(50*time.Second)) {
		t.Fatalf("frozen = %+v", fr)
	}
	if _, err := c.RenewLease(ctx, fr.LeaseID, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	th, err := c.Thaw(ctx, fr.LeaseID)
	if err != nil {
		t.Fatal(err)
	}
	if f.Frozen(fr.LeaseID) || len(th.Files) != 1 || string(th.Files[0].Content) != "lease "+fr.LeaseID {
		t.Fatalf("thawed = %+v", th)
	}

	// A lease nobody renews thaws by itself, and Thaw then says so.
	fr, err = c.Freeze(ctx, api.FreezeRequest{Lease: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Frozen(fr.LeaseID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.Frozen(fr.LeaseID) {
		t.Fatal("engine still frozen after its lease expired")
	}
	if _, err := c.Thaw(ctx, fr.LeaseID); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("thaw after expiry: err = %v", err)
	}
	if _, err := c.Freeze(ctx, api.FreezeRequest{}); err == nil {
		t.Fatal("freeze without a lease accepted")
	}
}

// memSegments is a SegmentSink that keeps segment sums and acknowledges
// each finished segment as durable, and a SegmentSource over what it kept.
type memSegments struct {
	durable chan api.Position
	done    []api.Segment
	sums    map[string]string
	aborted []string
	data    map[string][]byte
	keep    bool
}

func (m *memSegments) Begin(_ context.Context, h api.SegmentHeader) (api.SegmentWriter, error) {
	return &memWriter{m: m, h: h, sum: sha256.New()}, nil
}

type memWriter struct {
	m   *memSegments
	h   api.SegmentHeader
	sum hash.Hash
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.m.keep {
		w.buf.Write(p)
	}
	return w.sum.Write(p)
}

func (w *memWriter) Finish(t api.SegmentTrailer) error {
	w.m.done = append(w.m.done, api.Segment{SegmentHeader: w.h, SegmentTrailer: t})
	w.m.sums[w.h.Name] = hex.EncodeToString(w.sum.Sum(nil))
	if w.m.keep {
		w.m.data[w.h.Name] = w.buf.Bytes()
	}
	w.m.durable <- t.End
	return nil
}

func (w *memWriter) Abort(string) error {
	w.m.aborted = append(w.m.aborted, w.h.Name)
	return nil
}

func (m *memSegments) Fetch(_ context.Context, q api.SegmentQuery) (api.Segment, io.ReadCloser, error) {
	for _, s := range m.done {
		if q.Name == s.Name || (q.Name == "" && s.End.Compare(q.After) > 0) {
			return s, io.NopCloser(bytes.NewReader(m.data[s.Name])), nil
		}
	}
	return api.Segment{}, nil, fmt.Errorf("after %v: %w", q.After, api.ErrNoSegment)
}

func TestArchiveAndReplay(t *testing.T) {
	f := apitest.NewFake()
	c := connect(t, f)
	const size = 3<<20/2 + 1
	m := &memSegments{durable: make(chan api.Position, 16), sums: map[string]string{}, data: map[string][]byte{}, keep: true}
	durable := make(chan api.Position)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	errc := make(chan error, 1)
	go func() {
		errc <- c.Archive(ctx, api.ArchiveRequest{Options: map[string]string{"segments": "3", "size": fmt.Sprint(size)}}, m, durable)
	}()
	// Acknowledge each finished segment, then stop archiving.
	for range 3 {
		select {
		case p := <-m.durable:
			durable <- p
		case err := <-errc:
			t.Fatalf("archive ended early: %v", err)
		}
	}
	want := apitest.Pos(3 * size)
	for deadline := time.Now().Add(5 * time.Second); f.Released().Compare(want) != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if f.Released().Compare(want) != 0 {
		t.Fatalf("engine released up to %v, want %v", f.Released(), want)
	}
	close(durable)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := range int64(3) {
		name := apitest.SegmentName(i)
		if m.sums[name] != apitest.PatternSum(i, size) {
			t.Errorf("segment %s: wrong content", name)
		}
	}
	if len(m.done) != 3 || m.done[2].Size != size || m.done[0].Start.Epoch != 1 || m.done[1].Start.Compare(apitest.Pos(size)) != 0 {
		t.Errorf("segments = %+v", m.done)
	}
	if len(m.aborted) != 1 || m.aborted[0] != apitest.SegmentName(3) {
		t.Errorf("aborted = %v", m.aborted)
	}

	// Replay what was archived, up to the end of the second segment.
	res, err := c.Replay(ctx, api.ReplayRequest{From: apitest.Pos(0), To: api.RecoveryTarget{Position: apitest.Pos(2 * size)}}, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metadata["segments"] != "2" || res.Reached.Compare(apitest.Pos(2*size)) != 0 ||
		res.Metadata[apitest.SegmentName(1)] != apitest.PatternSum(1, size) {
		t.Fatalf("replay = %+v", res)
	}
	// Latest: all three, then the source runs out.
	res, err = c.Replay(ctx, api.ReplayRequest{From: apitest.Pos(0), To: api.RecoveryTarget{Latest: true}}, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metadata["segments"] != "3" || res.Reached.Compare(want) != 0 || res.Metadata["log_start"] != "" {
		t.Fatalf("replay latest = %+v", res)
	}
	// LogStart reaches the plugin.
	logStart := api.Position{Epoch: 1, Offset: 7, Token: []byte{7}, Text: "seven"}
	res, err = c.Replay(ctx, api.ReplayRequest{From: apitest.Pos(0), To: api.RecoveryTarget{Latest: true}, LogStart: logStart}, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metadata["log_start"] != "seven" {
		t.Fatalf("replay with a log start: the plugin got %q, want seven", res.Metadata["log_start"])
	}
}

func TestArchiveCancel(t *testing.T) {
	c := connect(t, apitest.NewFake())
	m := &memSegments{durable: make(chan api.Position, 16), sums: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.Archive(ctx, api.ArchiveRequest{Options: map[string]string{"segments": "1", "size": "10"}}, m, make(chan api.Position))
	}()
	<-m.durable
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
