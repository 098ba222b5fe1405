package mgengine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// URI is a mongodb:// or mongodb+srv:// connection string. It may hold a
// password: it never prints (String gives the URI without its password).
type URI string

// String gives the URI with its password replaced by "***".
func (u URI) String() string { return redact(string(u), string(u)) }

// GoString is String, so %#v never shows the password either.
func (u URI) GoString() string { return u.String() }

// Conn is a client of one server or replica set and the database the URI
// names ("" when it names none).
type Conn struct {
	Client   *mongo.Client
	Database string
	Hosts    []string
	uri      string
}

// Close disconnects.
func (c *Conn) Close() { _ = c.Client.Disconnect(context.Background()) }

// Connect parses uri, connects and checks the server answers, with errors
// that say what to fix and never hold the password.
func Connect(ctx context.Context, uri URI) (*Conn, error) {
	return connect(ctx, uri, "")
}

// ConnectMember connects to one member of uri's replica set, host
// ("host:port"), directly: with the URI's credentials and options, but
// neither discovering nor following the set.
func ConnectMember(ctx context.Context, uri URI, host string) (*Conn, error) {
	return connect(ctx, uri, host)
}

func connect(ctx context.Context, uri URI, member string) (*Conn, error) {
	s := string(uri)
	if s == "" {
		return nil, errors.New("no MongoDB URI: give --dsn mongodb://user:password@host:27017/[database]")
	}
	cs, err := connstring.ParseAndValidate(s)
	if err != nil {
		return nil, fmt.Errorf("MongoDB URI %s is malformed: %s; want mongodb://user:password@host:27017/[database]", uri, redact(err.Error(), s))
	}
	o := options.Client().ApplyURI(s).SetAppName("amber")
	if !cs.ServerSelectionTimeoutSet {
		o.SetServerSelectionTimeout(10 * time.Second)
	}
	if !cs.ConnectTimeoutSet {
		o.SetConnectTimeout(10 * time.Second)
	}
	hosts := cs.Hosts
	if member != "" {
		hosts = []string{member}
		o.SetHosts(hosts).SetDirect(true)
	}
	client, err := mongo.Connect(o)
	if err != nil {
		return nil, fmt.Errorf("connect to MongoDB at %s: %s", strings.Join(hosts, ","), redact(err.Error(), s))
	}
	c := &Conn{Client: client, Database: cs.Database, Hosts: hosts, uri: s}
	if err := client.Ping(ctx, nil); err != nil {
		c.Close()
		return nil, c.explain(err)
	}
	return c, nil
}

// explain turns a connection error into one that names the fix.
func (c *Conn) explain(err error) error {
	msg := redact(err.Error(), c.uri)
	hosts := strings.Join(c.Hosts, ",")
	switch {
	case strings.Contains(msg, "AuthenticationFailed") || strings.Contains(msg, "auth error") || strings.Contains(msg, "Authentication failed"):
		return fmt.Errorf("MongoDB at %s refused the login: authentication failed; check the user and password in the URI (and authSource, the database the user is defined in): %s", hosts, msg)
	case strings.Contains(msg, "(Unauthorized)") || strings.Contains(msg, "not authorized on"):
		return fmt.Errorf("MongoDB at %s refused the user: %s; grant it the backup role for backups and archiving, the restore role for restores, and clusterMonitor to read replication state: db.getSiblingDB(\"admin\").grantRolesToUser(\"<user>\", [\"backup\", \"clusterMonitor\"])", hosts, msg)
	case strings.Contains(msg, "server selection"):
		return fmt.Errorf("cannot reach MongoDB at %s: %s; check the host and port in the URI and that the server runs", hosts, msg)
	}
	return fmt.Errorf("MongoDB at %s: %s", hosts, msg)
}

// Redact returns msg with the password of uri replaced by "***", for
// errors that quote a driver's message.
func Redact(msg string, uri URI) string { return redact(msg, string(uri)) }

func redact(msg, uri string) string {
	pw := password(uri)
	if pw == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, pw, "***")
	if esc := url.QueryEscape(pw); esc != pw {
		msg = strings.ReplaceAll(msg, esc, "***")
	}
	if esc := url.PathEscape(pw); esc != pw {
		msg = strings.ReplaceAll(msg, esc, "***")
	}
	return msg
}

// password extracts the password from a URI (of any scheme) without a
// full parse, so it works on malformed URIs too.
func password(uri string) string {
	// Any scheme: a URI of the wrong kind is quoted in errors too.
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	userinfo := rest[:at]
	if i := strings.IndexAny(userinfo, "/?"); i >= 0 && i < at {
		// "@" after the host part: no userinfo.
		if !strings.Contains(userinfo[:i], ":") {
			return ""
		}
	}
	_, pw, ok := strings.Cut(userinfo, ":")
	if !ok {
		return ""
	}
	if u, err := url.PathUnescape(pw); err == nil && u != pw {
		return u
	}
	return pw
}

// DatabaseOf returns the database uri names, or "" (also when it is
// malformed).
func DatabaseOf(uri URI) string {
	cs, err := connstring.Parse(string(uri))
	if err != nil {
		return ""
	}
	return cs.Database
}
