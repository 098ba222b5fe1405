package api_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
)

// contractEngine records what reaches it and answers the position and
// log-file calls.
type contractEngine struct {
	api.Unsupported
	got api.RestoreRequest
}

func (*contractEngine) Info(context.Context) (api.Info, error) {
	return api.Info{Engine: "contract", PluginVersion: "1", Capabilities: []api.Capability{api.PhysicalRestore, api.LogFiles}}, nil
}

func (*contractEngine) Probe(context.Context, api.Target) (api.Probe, error) { return api.Probe{}, nil }

func (*contractEngine) ParsePosition(_ context.Context, text string) (api.Position, error) {
	if text != "7/0x10" {
		return api.Position{}, errors.New("write epoch/0xoffset")
	}
	return api.Position{Epoch: 7, Offset: 16, Token: []byte{7, 16}, Text: text}, nil
}

func (*contractEngine) DescribeLogFile(_ context.Context, q api.LogFileQuery) (api.LogFile, error) {
	if q.Name == "skip" {
		return api.LogFile{Ignore: true}, nil
	}
	seg := api.Segment{
		SegmentHeader:  api.SegmentHeader{Name: q.Name, Start: api.Position{Epoch: 2, Offset: 32, Text: "2/32"}, Branch: api.Position{Epoch: 1, Offset: 40, Text: "1/40"}},
		SegmentTrailer: api.SegmentTrailer{End: api.Position{Epoch: 2, Offset: 48, Text: "2/48"}, Partial: true, FileSize: 64},
	}
	if q.Settings["size"] != "64" {
		return api.LogFile{}, errors.New("settings did not arrive")
	}
	return api.LogFile{Segment: seg}, nil
}

func (e *contractEngine) PhysicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	e.got = req
	for {
		if _, _, err := src.Next(ctx); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return api.RestoreResult{}, err
		}
	}
	return api.RestoreResult{Owner: &api.FileOwner{UID: 999, GID: 998}}, nil
}

type noEntries struct{}

func (noEntries) Next(context.Context) (api.Entry, io.Reader, error) { return api.Entry{}, nil, io.EOF }

// TestContractTypedFields: positions with epochs, typed recovery targets,
// the log command and owner, and the log-file and position calls cross the
// wire intact.
func TestContractTypedFields(t *testing.T) {
	ctx := context.Background()
	e := &contractEngine{}
	c := connect(t, e)

	p, err := c.ParsePosition(ctx, "7/0x10")
	if err != nil || p.Epoch != 7 || p.Offset != 16 || string(p.Token) != "\x07\x10" || p.Text != "7/0x10" {
		t.Fatalf("ParsePosition = %+v, %v", p, err)
	}
	if _, err := c.ParsePosition(ctx, "nonsense"); err == nil || !strings.Contains(err.Error(), "epoch/0xoffset") {
		t.Fatalf("ParsePosition of nonsense: %v, want the plugin's message", err)
	}

	lf, err := c.DescribeLogFile(ctx, api.LogFileQuery{Name: "f", Settings: map[string]string{"size": "64"}})
	if err != nil || lf.Ignore || lf.Segment.Start.Epoch != 2 || lf.Segment.Branch.Offset != 40 || lf.Segment.End.Offset != 48 ||
		!lf.Segment.Partial || lf.Segment.FileSize != 64 {
		t.Fatalf("DescribeLogFile = %+v, %v", lf, err)
	}
	if lf, err := c.DescribeLogFile(ctx, api.LogFileQuery{Name: "skip"}); err != nil || !lf.Ignore {
		t.Fatalf("DescribeLogFile(skip) = %+v, %v", lf, err)
	}

	at := time.Date(2026, 11, 21, 10, 15, 0, 123, time.UTC)
	for _, to := range []api.RecoveryTarget{
		{Time: at, Inclusive: true},
		{Position: api.Position{Epoch: 3, Offset: 99, Text: "3/99"}},
		{Txn: "1234", Inclusive: true},
		{Name: "before-upgrade"},
		{},
	} {
		req := api.RestoreRequest{Target: api.Target{DataDir: "/d"}, To: to, LogCommand: []string{"amber", "log-fetch", "--stream", "s"},
			LogDoneCommand: []string{"amber", "log-fetch", "--done"}, KeepArchiving: true, RunAs: "postgres"}
		res, err := c.PhysicalRestore(ctx, req, noEntries{})
		if err != nil {
			t.Fatal(err)
		}
		g := e.got
		if g.To.String() != to.String() || !g.To.Time.Equal(to.Time) || g.To.Position.Offset != to.Position.Offset ||
			strings.Join(g.LogCommand, " ") != "amber log-fetch --stream s" || len(g.LogDoneCommand) != 3 || !g.KeepArchiving || g.RunAs != "postgres" {
			t.Errorf("sent %+v, the plugin got %+v", req, g)
		}
		if res.Owner == nil || res.Owner.UID != 999 || res.Owner.GID != 998 {
			t.Errorf("owner %+v", res.Owner)
		}
	}
}
