package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MongoDB test servers.
//
// No mongod can be installed on the test machines, so a server is
// ferretdb-testbed (conformance/tools/ferretdb, built by `make deps`):
// FerretDB embedded in-process with its SQLite handler, on 127.0.0.1 and a
// random port, its data in a temporary directory. FerretDB speaks the
// MongoDB wire protocol but is not mongod: no replica set, no
// transactions, no authentication with the SQLite handler, and an oplog
// only in emulation (op i, u and d appended to a capped local.oplog.rs once
// that collection exists; see docs/engines/mongodb.md).
//
// When AMBER_TEST_MONGODB_URI is set (mongodb://user:password@host:port/,
// a server the tests may write to), tests use that server instead: each
// test works in databases of its own, named with a random prefix, which
// StartMongoDB's cleanup drops.

// MongoDBURIEnv names the variable that points tests at a real server.
const MongoDBURIEnv = "AMBER_TEST_MONGODB_URI"

const mongoReadyTimeout = 30 * time.Second

// MongoDB is a MongoDB wire-protocol server for one test.
type MongoDB struct {
	// Base is the server's URI without a database.
	Base string
	// DBName is this test's default database, unique on the server.
	DBName string
	// Prefix starts every database name this test should use, so that
	// cleanup on a shared server finds them.
	Prefix   string
	FerretDB bool
	Dir      string // FerretDB's data directory

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMongoDB starts a FerretDB server, or uses the server named by
// AMBER_TEST_MONGODB_URI, and returns it with a fresh default database.
// On a shared server the databases the test created (named with Prefix)
// are dropped in cleanup. FerretDB's oplog emulation starts once the
// caller creates the capped collection local.oplog.rs.
func StartMongoDB(t testing.TB) *MongoDB {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "amber_" + hex.EncodeToString(b[:]) + "_"
	if uri := os.Getenv(MongoDBURIEnv); uri != "" {
		m := &MongoDB{Base: uri, Prefix: prefix, DBName: prefix + "app"}
		t.Cleanup(func() { m.dropOwn(t) })
		return m
	}
	bin := Tool(t, "ferretdb-testbed")
	dir, err := os.MkdirTemp(os.TempDir(), "amber-mongo-")
	if err != nil {
		t.Fatal(err)
	}
	m := &MongoDB{FerretDB: true, Dir: dir, Prefix: prefix, DBName: prefix + "app"}
	t.Cleanup(func() { m.Stop(); os.RemoveAll(dir) })
	logf, err := os.Create(filepath.Join(dir, "ferretdb.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-dir", filepath.Join(dir, "data"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ferretdb-testbed: %v", err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
				break
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { cmd.Wait(); close(m.done) }()
	select {
	case a := <-addr:
		m.Base = "mongodb://" + a + "/"
	case <-m.done:
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("ferretdb-testbed exited while starting:\n%s", b)
	case <-time.After(mongoReadyTimeout):
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("ferretdb-testbed not listening after %v:\n%s", mongoReadyTimeout, b)
	}
	return m
}

// dropOwn drops the databases of a shared server whose names start with
// the test's Prefix: every database the test made.
func (m *MongoDB) dropOwn(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(m.Base))
	if err != nil {
		t.Logf("drop the test's databases on %s: %v", MongoDBURIEnv, err)
		return
	}
	defer c.Disconnect(ctx)
	names, err := c.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: bson.D{{Key: "$regex", Value: "^" + m.Prefix}}}})
	if err != nil {
		t.Logf("list the test's databases on %s: %v", MongoDBURIEnv, err)
		return
	}
	for _, n := range names {
		if err := c.Database(n).Drop(ctx); err != nil {
			t.Logf("drop database %s: %v", n, err)
		}
	}
}

// DSN connects to the test's default database.
func (m *MongoDB) DSN() string { return m.URIFor(m.DBName) }

// URIFor connects to database db (none when db is empty).
func (m *MongoDB) URIFor(db string) string { return WithDatabase(m.Base, db) }

// WithDatabase returns uri naming database db (none when db is empty),
// keeping its hosts, credentials and options.
func WithDatabase(uri, db string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	hosts, tail, _ := strings.Cut(rest, "/")
	query := ""
	if i := strings.IndexByte(tail, '?'); i >= 0 {
		query = tail[i:]
	} else if i := strings.IndexByte(hosts, '?'); i >= 0 {
		hosts, query = hosts[:i], hosts[i:]
	}
	return fmt.Sprintf("%s://%s/%s%s", scheme, hosts, db, query)
}

// Stop shuts a FerretDB server down; a real server is left alone.
func (m *MongoDB) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	select {
	case <-m.done:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	}
	m.cmd = nil
}

// WithUser returns uri logging in as user with password, keeping its
// hosts, database and options.
func WithUser(uri, user, password string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	hostEnd := strings.IndexAny(rest, "/?")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	if at := strings.LastIndex(rest[:hostEnd], "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + url.UserPassword(user, password).String() + "@" + rest
}
