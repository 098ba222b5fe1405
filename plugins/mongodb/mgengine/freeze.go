package mgengine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Frozen is a server held by fsyncLock for a volume snapshot: every write
// waits, data files are flushed. Unlike a MySQL lock, MongoDB's is not tied
// to a connection: it holds until fsyncUnlock, even when the process that
// took it dies. Thaw (or Abort) must be called.
type Frozen struct {
	c    *Conn
	once sync.Once
	err  error

	Pos       Pos       // newest oplog entry under the lock; zero without an oplog
	Epoch     uint32    // Pos's epoch (Conn.EpochOf), from the archived end Freeze was given
	Time      time.Time // when the lock was taken
	LockCount int       // the server's fsync lock count after this lock; above 1, someone else holds one too
}

// Codes of MongoDB errors Freeze explains.
const (
	codeUnauthorized    = 13
	codeCommandNotFound = 59
)

// Freeze takes the server's fsync lock (`{fsync: 1, lock: true}`) and reads
// the newest oplog entry under it, and its epoch from a, the archived end
// of the server's oplog stream (zero: none). On any error nothing is left
// locked.
func Freeze(ctx context.Context, uri URI, a Archived) (*Frozen, error) {
	c, err := Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	var reply struct {
		LockCount int `bson:"lockCount"`
	}
	admin := c.Client.Database("admin")
	if err := admin.RunCommand(ctx, bson.D{{Key: "fsync", Value: 1}, {Key: "lock", Value: true}}).Decode(&reply); err != nil {
		defer c.Close()
		var ce mongo.CommandError
		if errors.As(err, &ce) {
			switch ce.Code {
			case codeCommandNotFound:
				return nil, fmt.Errorf("MongoDB at %s cannot be frozen for a volume snapshot: it has no fsync lock (%s); take a logical backup (amber backup --mode logical) instead",
					c.label(), Redact(err.Error(), uri))
			case codeUnauthorized:
				return nil, fmt.Errorf("MongoDB at %s refused fsyncLock: the user lacks the fsync and unlock privileges; grant it the hostManager role (db.grantRolesToUser(user, [{role: \"hostManager\", db: \"admin\"}])): %s",
					c.label(), Redact(err.Error(), uri))
			}
		}
		return nil, c.explain(fmt.Errorf("fsyncLock: %w", err))
	}
	f := &Frozen{c: c, Time: time.Now(), LockCount: reply.LockCount}
	pos, ok, err := c.LastOplog(ctx)
	if err != nil {
		return nil, errors.Join(err, f.Thaw(context.WithoutCancel(ctx)))
	}
	f.Pos, f.Epoch = pos, 1
	if ok && !pos.IsZero() {
		if f.Epoch, err = c.EpochOf(ctx, a, pos.Next()); err != nil {
			return nil, errors.Join(err, f.Thaw(context.WithoutCancel(ctx)))
		}
	}
	return f, nil
}

func (c *Conn) label() string {
	if len(c.Hosts) == 0 {
		return "(no host)"
	}
	return strings.Join(c.Hosts, ",")
}

// Thaw releases the lock (`{fsyncUnlock: 1}`) and closes the connection.
// It is safe to call more than once; later calls return the first result.
func (f *Frozen) Thaw(ctx context.Context) error {
	f.once.Do(func() {
		defer f.c.Close()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := f.c.Client.Database("admin").RunCommand(ctx, bson.D{{Key: "fsyncUnlock", Value: 1}}).Err(); err != nil {
			f.err = f.c.explain(fmt.Errorf("fsyncUnlock: %w; the server may still be locked: run db.fsyncUnlock() in mongosh", err))
		}
	})
	return f.err
}
