package mgengine

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Transactions in the oplog (MongoDB 4.2 and later). Every entry of a
// transaction is a command entry on admin.$cmd that carries the session
// (lsid), the transaction number (txnNumber) and the optime of the
// transaction's entry before it (prevOpTime; {ts: Timestamp(0, 0), t: -1}
// on its first):
//
//   - a transaction that fits one entry: one applyOps, committed by itself;
//   - a larger one: applyOps entries with partialTxn: true, then a last
//     applyOps without it (with count: the number of operations);
//   - a prepared one (sharded clusters): applyOps with prepare: true (after
//     partialTxn entries, when large), then later, with other entries in
//     between, a commitTransaction entry ({commitTransaction: 1,
//     commitTimestamp: ts}) or an abortTransaction entry.
//
// A transaction takes effect where it commits: the last applyOps of an
// unprepared one, the commitTransaction entry of a prepared one. The
// applier holds the earlier entries until then, applies them all in
// order at the commit, and drops them at an abort; a point-in-time target
// before the commit leaves the transaction out. An applyOps without lsid
// and txnNumber (the applyOps command run by hand) is applied as it comes.

// txnKey identifies a transaction: its session and number.
type txnKey struct {
	lsid string // the lsid document's bytes
	num  int64
}

// txnEntry is what the applier reads of a transaction's entry.
type txnEntry struct {
	LSID       bson.Raw `bson:"lsid"`
	TxnNumber  *int64   `bson:"txnNumber"`
	PrevOpTime *struct {
		TS bson.Timestamp `bson:"ts"`
	} `bson:"prevOpTime"`
}

// txnRole is what an entry does in a transaction.
type txnRole int

const (
	txnNone    txnRole = iota // not a transaction's entry
	txnPart                   // applyOps held until the commit (partialTxn or prepare)
	txnCommit                 // the last applyOps of an unprepared transaction
	txnCommitP                // commitTransaction of a prepared one
	txnAbort                  // abortTransaction
)

// roleOf says what e does in a transaction, and which one.
func roleOf(raw bson.Raw, e Entry) (txnRole, txnKey, *txnEntry, error) {
	if e.Op != "c" {
		return txnNone, txnKey{}, nil, nil
	}
	var t txnEntry
	if err := bson.Unmarshal(raw, &t); err != nil {
		return txnNone, txnKey{}, nil, err
	}
	if t.LSID == nil || t.TxnNumber == nil {
		return txnNone, txnKey{}, nil, nil
	}
	els, err := e.O.Elements()
	if err != nil || len(els) == 0 {
		return txnNone, txnKey{}, nil, nil
	}
	k := txnKey{lsid: string(t.LSID), num: *t.TxnNumber}
	switch els[0].Key() {
	case "applyOps":
		held := false
		for _, el := range els[1:] {
			if (el.Key() == "partialTxn" || el.Key() == "prepare") && el.Value().Type == bson.TypeBoolean && el.Value().Boolean() {
				held = true
			}
		}
		if held {
			return txnPart, k, &t, nil
		}
		return txnCommit, k, &t, nil
	case "commitTransaction":
		return txnCommitP, k, &t, nil
	case "abortTransaction":
		return txnAbort, k, &t, nil
	}
	return txnNone, txnKey{}, nil, nil
}

// heldTxn is a transaction whose entries wait for its commit.
type heldTxn struct {
	first Pos
	parts []Entry
}

// isFirst reports whether t's prevOpTime says it is its transaction's
// first entry (4.0 wrote no prevOpTime: its transactions are one entry).
func (t *txnEntry) isFirst() bool {
	return t.PrevOpTime == nil || (t.PrevOpTime.TS.T == 0 && t.PrevOpTime.TS.I == 0)
}

// ErrTxnStartMissing is returned when a transaction commits whose first
// entries are not in the log applied: they precede where it starts.
var ErrTxnStartMissing = errors.New("a transaction began before the log replayed")

func startMissing(commit Pos, k txnKey) error {
	return fmt.Errorf("%w: its first oplog entries are not in the log read (they precede the backup's oplog window, or the archive's first segment), and it commits at %s (txnNumber %d); restore to a target before %s, or from a backup taken after it",
		ErrTxnStartMissing, commit.Text(), k.num, commit.Text())
}

// transaction applies raw if it is a transaction's entry: it holds a
// part, applies a transaction at its commit, drops it at its abort. It
// reports whether raw was one.
func (a *Applier) transaction(ctx context.Context, raw bson.Raw, e Entry) (bool, error) {
	role, k, t, err := roleOf(raw, e)
	if err != nil || role == txnNone {
		return false, err
	}
	p := Pos{T: e.TS.T, I: e.TS.I}
	if a.held == nil {
		a.held = map[txnKey]*heldTxn{}
	}
	h := a.held[k]
	switch role {
	case txnPart:
		if h == nil {
			if !t.isFirst() {
				// Its earlier entries precede the log: remember that,
				// and refuse at its commit.
				h = &heldTxn{}
			} else {
				h = &heldTxn{first: p}
			}
			a.held[k] = h
		}
		h.parts = append(h.parts, e)
		return true, nil
	case txnAbort:
		delete(a.held, k)
		return true, nil
	}
	// A commit: the last applyOps (with the parts before it), or
	// commitTransaction (of the parts held).
	delete(a.held, k)
	var parts []Entry
	missing := (h != nil && h.first.IsZero()) || (h == nil && (role == txnCommitP || !t.isFirst()))
	if missing && !a.PartialStart {
		return true, startMissing(p, k)
	}
	if missing {
		a.PartialTxns++
	}
	if h != nil {
		parts = h.parts
	}
	if role == txnCommit {
		parts = append(parts, e)
	}
	for _, part := range parts {
		part.TS = e.TS // the transaction's writes take effect at its commit
		if err := a.apply(ctx, part); err != nil {
			return true, err
		}
	}
	return true, nil
}

// Pending returns the number of transactions whose entries the applier
// holds, not applied: they had not committed (or aborted) by the last
// entry applied.
func (a *Applier) Pending() int { return len(a.held) }

// Collect reads an entry from before the copy's position (the log a
// backup's copy already holds): it applies nothing, holds the parts of
// transactions, and forgets those that commit or abort there (the copy
// holds the committed ones). What is still held when the position is
// reached are the transactions open at it, which Apply then applies
// whole where they commit.
func (a *Applier) Collect(raw bson.Raw) error {
	var e Entry
	if err := bson.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("oplog entry: %w", err)
	}
	role, k, t, err := roleOf(raw, e)
	if err != nil || role == txnNone {
		return err
	}
	if a.held == nil {
		a.held = map[txnKey]*heldTxn{}
	}
	switch role {
	case txnPart:
		h := a.held[k]
		if h == nil {
			h = &heldTxn{}
			if t.isFirst() {
				h.first = Pos{T: e.TS.T, I: e.TS.I}
			}
			a.held[k] = h
		}
		h.parts = append(h.parts, e)
	default:
		delete(a.held, k)
	}
	return nil
}
