package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/apitest"
)

// pipeEngine is a fake whose LogicalDump runs dump against the sink.
type pipeEngine struct {
	*apitest.Fake
	dump func(ctx context.Context, sink api.EntrySink) error
}

func (e pipeEngine) LogicalDump(ctx context.Context, _ api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := e.dump(ctx, sink); err != nil {
		return api.BackupResult{}, err
	}
	return api.BackupResult{Start: apitest.Pos(1), Consistent: apitest.Pos(1), StartTime: time.Now(), ConsistentTime: time.Now(),
		ServerVersion: "fake 1.0", SystemID: "fake-system"}, nil
}

// within fails the test when f does not return within d: a pipe nobody
// closes would hang the backup.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %s", d)
	}
}

// TestPipeFileToolWritesToTheHost: a child process given the entry's pipe
// as its stdout writes to the host directly; the host receives exactly its
// output, uncounted by the plugin.
func TestPipeFileToolWritesToTheHost(t *testing.T) {
	want, err := exec.Command("seq", "1", "400000").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, pipeEngine{Fake: apitest.NewFake(), dump: func(ctx context.Context, sink api.EntrySink) error {
		w, err := sink.Create(ctx, api.Entry{Name: "seq.txt", Size: -1})
		if err != nil {
			return err
		}
		p, ok := w.(api.PipeFile)
		if !ok {
			return errors.New("the entry's writer offers no pipe")
		}
		cmd := exec.CommandContext(ctx, "seq", "1", "400000")
		cmd.Stdout = p.PipeFile()
		if err := cmd.Run(); err != nil {
			return err
		}
		return w.Close()
	}})
	sink := newHashSink()
	within(t, 30*time.Second, func() {
		if _, err := c.LogicalDump(context.Background(), api.BackupRequest{}, sink); err != nil {
			t.Error(err)
		}
	})
	sum := sha256.Sum256(want)
	if sink.sizes["seq.txt"] != int64(len(want)) || sink.sums["seq.txt"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("host got %d bytes, want %d (%s)", sink.sizes["seq.txt"], len(want), bytes.TrimSpace(want[len(want)-8:]))
	}
}

// TestPipeEngineFailsMidEntry: an engine that returns an error with its
// entry's pipe open fails the backup with that error; the host does not
// wait for a pipe nobody writes to.
func TestPipeEngineFailsMidEntry(t *testing.T) {
	c := connect(t, pipeEngine{Fake: apitest.NewFake(), dump: func(ctx context.Context, sink api.EntrySink) error {
		w, err := sink.Create(ctx, api.Entry{Name: "half", Size: -1})
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, apitest.Pattern(1, 3<<20)); err != nil {
			return err
		}
		return errors.New("the server went away")
	}})
	within(t, 30*time.Second, func() {
		_, err := c.LogicalDump(context.Background(), api.BackupRequest{}, newHashSink())
		if err == nil || !strings.Contains(err.Error(), "the server went away") {
			t.Errorf("err = %v", err)
		}
	})
}

// failingSink reads part of an entry, then fails.
type failingSink struct{ read int64 }

func (s *failingSink) Entry(_ context.Context, e api.Entry, r io.Reader) error {
	n, _ := io.CopyN(io.Discard, r, 1<<20)
	s.read = n
	return errors.New("bucket is full")
}

func (s *failingSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("host sinks are read through Entry")
}

// TestPipeHostStopsReading: when the host's sink fails mid-entry, the
// backup fails with the sink's error and the plugin's writes into the pipe
// fail rather than block.
func TestPipeHostStopsReading(t *testing.T) {
	wrote := make(chan error, 1)
	c := connect(t, pipeEngine{Fake: apitest.NewFake(), dump: func(ctx context.Context, sink api.EntrySink) error {
		w, err := sink.Create(ctx, api.Entry{Name: "big", Size: -1})
		if err != nil {
			return err
		}
		_, err = io.Copy(w, apitest.Pattern(2, 256<<20))
		wrote <- err
		return err
	}})
	sink := &failingSink{}
	within(t, 30*time.Second, func() {
		_, err := c.LogicalDump(context.Background(), api.BackupRequest{}, sink)
		if err == nil || !strings.Contains(err.Error(), "bucket is full") {
			t.Errorf("err = %v", err)
		}
	})
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the plugin wrote 256 MiB into a pipe the host had stopped reading")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the plugin's write still blocks after the host stopped reading")
	}
	if sink.read != 1<<20 {
		t.Fatalf("the sink read %d bytes", sink.read)
	}
}

// restoreEngine is a fake whose LogicalRestore runs restore on the source.
type restoreEngine struct {
	*apitest.Fake
	restore func(ctx context.Context, src api.EntrySource) (map[string]string, error)
}

func (e restoreEngine) LogicalRestore(ctx context.Context, _ api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	meta, err := e.restore(ctx, src)
	return api.RestoreResult{Metadata: meta}, err
}

// TestRestorePipeToATool: a child process given a restore entry's pipe as
// its stdin reads what the host sends; what it leaves unread is drained
// before the next entry, which arrives whole.
func TestRestorePipeToATool(t *testing.T) {
	sizes := []int64{3<<20 + 7, 1 << 20, 0}
	c := connect(t, restoreEngine{Fake: apitest.NewFake(), restore: func(ctx context.Context, src api.EntrySource) (map[string]string, error) {
		meta := map[string]string{}
		for i := 0; ; i++ {
			e, r, err := src.Next(ctx)
			if errors.Is(err, io.EOF) {
				return meta, nil
			}
			if err != nil {
				return nil, err
			}
			p, ok := r.(api.PipeFile)
			if !ok {
				return nil, errors.New("the restore entry's reader offers no pipe")
			}
			// The first entry is read whole by sha256sum, the second
			// only in part by head: the rest is drained.
			cmd := exec.CommandContext(ctx, "sha256sum")
			if i == 1 {
				cmd = exec.CommandContext(ctx, "head", "-c", "1000")
			}
			cmd.Stdin = p.PipeFile()
			out, err := cmd.Output()
			if err != nil {
				return nil, err
			}
			if i == 1 {
				meta[e.Name] = fmt.Sprint(len(out))
			} else {
				meta[e.Name] = strings.Fields(string(out))[0]
			}
		}
	}})
	within(t, 30*time.Second, func() {
		res, err := c.LogicalRestore(context.Background(), api.RestoreRequest{}, &listSource{sizes: sizes})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Metadata["e0"], apitest.PatternSum(0, sizes[0]); got != want {
			t.Errorf("e0: the tool read sum %s, want %s", got, want)
		}
		if n := res.Metadata["e1"]; n != "1000" {
			t.Errorf("e1: head read %s bytes", n)
		}
		if got, want := res.Metadata["e2"], apitest.PatternSum(2, 0); got != want {
			t.Errorf("e2: the tool read sum %s, want %s", got, want)
		}
	})
}

// TestRestoreEngineStopsReading: an engine that returns an error without
// reading its entry's pipe fails the restore with that error; the host's
// write into the pipe fails rather than blocks.
func TestRestoreEngineStopsReading(t *testing.T) {
	c := connect(t, restoreEngine{Fake: apitest.NewFake(), restore: func(ctx context.Context, src api.EntrySource) (map[string]string, error) {
		if _, _, err := src.Next(ctx); err != nil {
			return nil, err
		}
		return nil, errors.New("the database refused the schema")
	}})
	within(t, 30*time.Second, func() {
		_, err := c.LogicalRestore(context.Background(), api.RestoreRequest{}, &listSource{sizes: []int64{256 << 20}})
		if err == nil || !strings.Contains(err.Error(), "the database refused the schema") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestRestoreEngineRefusesBeforeReading: an engine that refuses the
// request before it takes its first entry (the pipe never leaves the
// plugin's hands) fails the restore with its error; the host's write into
// that pipe fails once the call has ended rather than block.
func TestRestoreEngineRefusesBeforeReading(t *testing.T) {
	c := connect(t, restoreEngine{Fake: apitest.NewFake(), restore: func(context.Context, api.EntrySource) (map[string]string, error) {
		return nil, errors.New("a GTID target is not supported")
	}})
	within(t, 30*time.Second, func() {
		_, err := c.LogicalRestore(context.Background(), api.RestoreRequest{}, &listSource{sizes: []int64{256 << 20}})
		if err == nil || !strings.Contains(err.Error(), "a GTID target is not supported") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestRestoreEngineNeedsNoMore: an engine that returns success before
// reading all it was sent ends the restore with its result.
func TestRestoreEngineNeedsNoMore(t *testing.T) {
	c := connect(t, restoreEngine{Fake: apitest.NewFake(), restore: func(ctx context.Context, src api.EntrySource) (map[string]string, error) {
		_, r, err := src.Next(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, r, 1000); err != nil {
			return nil, err
		}
		return map[string]string{"read": "1000"}, nil
	}})
	within(t, 30*time.Second, func() {
		res, err := c.LogicalRestore(context.Background(), api.RestoreRequest{}, &listSource{sizes: []int64{256 << 20, 5}})
		if err != nil || res.Metadata["read"] != "1000" {
			t.Errorf("result %+v, err %v", res, err)
		}
	})
}
