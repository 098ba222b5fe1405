package pgengine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DSN is a libpq connection string (URL or key=value form). It may hold a
// password, so it never prints itself: String, GoString and LogValue all
// show the DSN with the password replaced by "***".
//
// A `replication` parameter in the DSN is ignored: pgengine opens SQL and
// walsender connections from the same DSN as it needs them.
type DSN string

// String returns the DSN with its password redacted.
func (d DSN) String() string { return redactDSN(string(d)) }

// GoString is String, so %#v does not leak the password either.
func (d DSN) GoString() string { return d.String() }

// LogValue makes slog log the redacted form.
func (d DSN) LogValue() slog.Value { return slog.StringValue(d.String()) }

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)

func redactDSN(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "postgres://***"
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "***")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "***")
			u.RawQuery = q.Encode()
		}
		return strings.Replace(u.String(), "%2A%2A%2A", "***", -1)
	}
	return kvPassword.ReplaceAllString(s, "${1}***")
}

// splitPassword returns the DSN without its password, and the password, so
// that child processes get the password through PGPASSWORD and not argv.
func splitPassword(s string) (dsn, password string) {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return s, ""
		}
		if p, ok := u.User.Password(); ok {
			password = p
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		if q.Has("password") {
			password = q.Get("password")
			q.Del("password")
		}
		q.Del("replication")
		u.RawQuery = q.Encode()
		return u.String(), password
	}
	if m := kvPassword.FindStringSubmatch(s); m != nil {
		password = strings.Trim(m[2], "'")
		password = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(password)
	}
	return strings.TrimSpace(kvPassword.ReplaceAllString(s, "")), password
}

// Sentinel errors; wrapped errors say what to do next.
var (
	// ErrConnect: the server could not be reached or refused the login.
	ErrConnect = errors.New("cannot connect to PostgreSQL")
	// ErrNoReplication: the role lacks the REPLICATION attribute, or
	// pg_hba.conf does not admit replication connections.
	ErrNoReplication = errors.New("replication not permitted")
	// ErrWALLevelMinimal: wal_level=minimal, so no online physical backup
	// or WAL streaming is possible.
	ErrWALLevelMinimal = errors.New("wal_level is minimal")
	// ErrWALGap: WAL the caller needs is no longer on the server.
	ErrWALGap = errors.New("WAL gap")
)

func parseConfig(dsn DSN) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(string(dsn))
	if err != nil {
		// pgconn redacts passwords in its parse errors; say it again anyway.
		msg := strings.ReplaceAll(err.Error(), string(dsn), dsn.String())
		return nil, fmt.Errorf("%w: invalid DSN %s: %s", ErrConnect, dsn, msg)
	}
	delete(cfg.RuntimeParams, "replication")
	return cfg, nil
}

func target(cfg *pgconn.Config) string {
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))) + " as " + cfg.User
}

func connectError(cfg *pgconn.Config, password string, err error) error {
	msg := err.Error()
	if password != "" {
		msg = strings.ReplaceAll(msg, password, "***")
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "42501" && strings.Contains(pgErr.Message, "replication"):
			return fmt.Errorf("%w: role %s lacks REPLICATION; ALTER ROLE %s REPLICATION (%s)",
				ErrNoReplication, cfg.User, cfg.User, pgErr.Message)
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "replication"):
			return fmt.Errorf("%w: pg_hba.conf has no entry for replication connections of %s; add `host replication %s <client-address> scram-sha-256` and reload (%s)",
				ErrNoReplication, cfg.User, cfg.User, pgErr.Message)
		}
	}
	return fmt.Errorf("%w at %s: %s; check the DSN", ErrConnect, target(cfg), msg)
}

// connectSQL opens an ordinary (non-replication) connection.
func connectSQL(ctx context.Context, dsn DSN) (*pgx.Conn, error) {
	pcfg, err := parseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(string(dsn))
	if err != nil {
		return nil, fmt.Errorf("%w: invalid DSN %s", ErrConnect, dsn)
	}
	delete(cfg.RuntimeParams, "replication")
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(pcfg, pcfg.Password, err)
	}
	return conn, nil
}

// connectReplication opens a physical walsender connection (replication=true).
func connectReplication(ctx context.Context, dsn DSN) (*pgconn.PgConn, error) {
	return connectReplicationAs(ctx, dsn, "")
}

// connectReplicationAs is connectReplication with application_name set to
// appName when the DSN sets none (synchronous_standby_names matches it).
func connectReplicationAs(ctx context.Context, dsn DSN, appName string) (*pgconn.PgConn, error) {
	cfg, err := parseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if appName != "" && cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = appName
	}
	cfg.RuntimeParams["replication"] = "true"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(cfg, cfg.Password, err)
	}
	return conn, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
