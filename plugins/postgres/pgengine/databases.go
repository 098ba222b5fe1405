package pgengine

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var kvDBName = regexp.MustCompile(`(?i)(^|\s)dbname\s*=\s*('(?:[^'\\]|\\.)*'|[^\s]*)`)

// WithDatabase returns dsn with its database replaced by db.
func WithDatabase(dsn DSN, db string) DSN {
	s := string(dsn)
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return dsn
		}
		u.Path, u.RawPath = "/"+db, ""
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return DSN(u.String())
	}
	s = strings.TrimSpace(kvDBName.ReplaceAllString(s, ""))
	quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
	return DSN(strings.TrimSpace(s + " dbname=" + quoted))
}

// ListDatabases returns the databases of dsn's server that take
// connections, templates left out, by name.
func ListDatabases(ctx context.Context, dsn DSN) ([]string, error) {
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// DatabaseExists reports whether db is on dsn's server.
func DatabaseExists(ctx context.Context, dsn DSN, db string) (bool, error) {
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for database %s: %w", db, err)
	}
	return ok, nil
}

// entryPrefix is db made safe as the first part of entry names: no
// slashes, backslashes or control characters, never "." or "..".
func entryPrefix(db string) string {
	p := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, db)
	if p == "" || p == "." || p == ".." {
		p = "_" + p
	}
	return p
}
