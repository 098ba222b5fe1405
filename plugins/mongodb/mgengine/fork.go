package mgengine

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Rollback detection: epochs.
//
// An epoch is one unbroken history of the oplog (docs/plugin-protocol.md).
// Elections keep it (ts keeps growing across them); a rollback ends it: a
// former primary's entries that the set never acknowledged are undone
// when it rejoins, and the new primary's history goes on without them.
// An archiver that archived such entries and then reads the new history
// must not append it to the same epoch.
//
// Before every cursor opens on a resume (a restart with an archived end,
// or a dead cursor after an election), the archiver looks up the last
// entry it archived (the one just before the archived end) in the
// server's oplog, by ts, and compares its term t (replica sets write one
// in every entry; the archiver keeps it in the end position's token):
//
//   - the entry is there, with the same term (or neither knows one): the
//     same history, the same epoch;
//   - the oplog does not reach back that far (empty, or its oldest entry
//     is newer): nothing to compare; rolledPast reports the hole;
//   - else (the entry is gone while older ones remain, or it carries
//     another term) the history forked. The fork point is the newest entry
//     of the server's oplog before the archived one whose term is no newer
//     than the archived one's (every entry when terms are unknown): the
//     last entry both histories hold. The archiver starts epoch n+1 just
//     past it, and every segment of the new epoch carries it as its branch
//     (the position in epoch n where epoch n+1 takes over).

// HistEntry is what fork detection reads of an oplog entry.
type HistEntry struct {
	Pos     Pos
	Term    int64
	HasTerm bool
}

// ForkFacts are what the server's oplog says about the last archived entry.
type ForkFacts struct {
	Last   HistEntry  // the last archived entry (its term as the archiver saw it)
	At     *HistEntry // the server's entry with Last's ts; nil when it has none
	Common *HistEntry // the server's newest entry before Last (term <= Last's, when known); nil when none
	Oldest Pos        // the server's oldest entry; zero when the oplog is empty
	// Newest is the server's newest entry, when read (only dumps and
	// freezes read it, and only when At is nil; see Behind).
	Newest *HistEntry
}

// Fork decides from f whether the history forked and, when it did, the
// boundary where the new epoch starts: just past the last entry both
// histories hold (the oldest entry left when no entry is shared).
func (f ForkFacts) Fork() (forked bool, branch Pos) {
	if f.At != nil {
		if !f.Last.HasTerm || !f.At.HasTerm || f.At.Term == f.Last.Term {
			return false, Pos{}
		}
	} else if f.Oldest.IsZero() || f.Last.Pos.Less(f.Oldest) {
		return false, Pos{}
	}
	if f.Common == nil {
		return true, f.Oldest
	}
	return true, f.Common.Pos.Next()
}

// lastOf is the entry just before boundary end (ends are one past an entry).
func lastOf(end Pos) Pos {
	if end.IsZero() {
		return end
	}
	return FromOffset(end.Offset() - 1)
}

type termEntry struct {
	TS bson.Timestamp `bson:"ts"`
	T  *int64         `bson:"t"`
}

func (e termEntry) hist() *HistEntry {
	h := &HistEntry{Pos: Pos{T: e.TS.T, I: e.TS.I}}
	if e.T != nil {
		h.Term, h.HasTerm = *e.T, true
	}
	return h
}

// forkFacts reads what Fork needs from the server: the entry at the last
// archived ts, the newest shared candidate before it and the oldest entry.
func forkFacts(ctx context.Context, c *Conn, oplog *mongo.Collection, end Pos, term int64, hasTerm bool) (ForkFacts, error) {
	f := ForkFacts{Last: HistEntry{Pos: lastOf(end), Term: term, HasTerm: hasTerm}}
	ts := bson.Timestamp{T: f.Last.Pos.T, I: f.Last.Pos.I}
	find := func(filter bson.D, sort int) (*HistEntry, error) {
		var e termEntry
		o := options.FindOne().SetProjection(bson.D{{Key: "ts", Value: 1}, {Key: "t", Value: 1}})
		if sort != 0 {
			o.SetSort(bson.D{{Key: "$natural", Value: sort}})
		}
		err := oplog.FindOne(ctx, filter, o).Decode(&e)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, nil
		}
		if err != nil {
			return nil, c.explain(fmt.Errorf("read the oplog (rollback check): %w", err))
		}
		return e.hist(), nil
	}
	var err error
	if f.At, err = find(bson.D{{Key: "ts", Value: ts}}, 0); err != nil {
		return f, err
	}
	if f.At != nil && (!hasTerm || !f.At.HasTerm || f.At.Term == term) {
		return f, nil // the same history: nothing more to read
	}
	oldest, err := find(bson.D{}, 1)
	if err != nil || oldest == nil {
		return f, err
	}
	f.Oldest = oldest.Pos
	filter := bson.D{{Key: "ts", Value: bson.D{{Key: "$lt", Value: ts}}}}
	if hasTerm {
		filter = append(filter, bson.E{Key: "t", Value: bson.D{{Key: "$lte", Value: term}}})
	}
	f.Common, err = find(filter, -1)
	return f, err
}

// Epochs of dumps and freezes.
//
// A dump or a freeze reports the epoch of its position from the archived
// end the host passes it (api.BackupRequest.Archived), by the same
// comparison the archiver makes when it resumes there: it reads what the
// server it copies says about the last archived entry (forkFacts). When
// nothing is archived, epoch 1. When the history forked since, the epoch
// the archiver will start when it resumes, n+1. Else the archived end's
// epoch n, or its parent n-1 for a position before n's branch (a member so
// far behind that it has not reached the point where epoch n took over).
// A member that has not yet replicated the last archived entry (its newest
// entry is older, of a term no newer) is behind, not forked.

// Archived is the archived end of a log stream, as the host holds it.
type Archived struct {
	End     Pos // boundary one past the last archived entry; zero: nothing archived
	Epoch   uint32
	Term    int64 // term of the last archived entry, when HasTerm
	HasTerm bool
	Branch  Pos // where End's epoch took over from its parent; zero for epoch 1
}

// Behind reports whether the server has not reached the last archived
// entry yet: it lacks it, and its newest entry is older and of no newer
// term (so not of a history that replaced it).
func (f ForkFacts) Behind() bool {
	if f.At != nil || f.Newest == nil || !f.Newest.Pos.Less(f.Last.Pos) {
		return false
	}
	return !f.Last.HasTerm || !f.Newest.HasTerm || f.Newest.Term <= f.Last.Term
}

// EpochAt names the epoch of boundary p, a position on the server whose
// oplog said f about the last entry archived before a.End.
func EpochAt(a Archived, f ForkFacts, p Pos) uint32 {
	if a.End.IsZero() {
		return 1
	}
	e := max(a.Epoch, 1)
	if !f.Behind() {
		if forked, branch := f.Fork(); forked {
			if branch.Less(p) {
				return e + 1
			}
			return e // p is in the history both share
		}
	}
	if e > 1 && !a.Branch.IsZero() && p.Less(a.Branch) {
		return e - 1
	}
	return e
}

// EpochOf reads what the server c is connected to says about the last
// archived entry of a and names the epoch of p, a position on it.
func (c *Conn) EpochOf(ctx context.Context, a Archived, p Pos) (uint32, error) {
	if a.End.IsZero() {
		return 1, nil
	}
	oplog := c.Client.Database("local").Collection("oplog.rs")
	f, err := forkFacts(ctx, c, oplog, a.End, a.Term, a.HasTerm)
	if err != nil {
		return 0, err
	}
	if f.At == nil {
		var e termEntry
		err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}}).
			SetProjection(bson.D{{Key: "ts", Value: 1}, {Key: "t", Value: 1}})).Decode(&e)
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return 0, c.explain(fmt.Errorf("read the newest oplog entry: %w", err))
		}
		if err == nil {
			f.Newest = e.hist()
		}
	}
	return EpochAt(a, f, p), nil
}
