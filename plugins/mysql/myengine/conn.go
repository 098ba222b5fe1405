package myengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DSN is a connection string: a URL
// (mysql://user:password@host:port/database?param=value) or the
// go-sql-driver form (user:password@tcp(host:port)/database). It may hold
// a password: its String method never shows it.
type DSN string

func (DSN) String() string { return "***" }

// Config parses d into a driver configuration.
func (d DSN) Config() (*mysql.Config, error) {
	s := string(d)
	if rest, ok := strings.CutPrefix(s, "mysql://"); ok || strings.HasPrefix(s, "mariadb://") {
		if !ok {
			rest = strings.TrimPrefix(s, "mariadb://")
		}
		u, err := url.Parse("mysql://" + rest)
		if err != nil {
			return nil, errors.New("the DSN is not a valid mysql:// URL; check the DSN (mysql://user:password@host:port/database)")
		}
		cfg := mysql.NewConfig()
		cfg.Net = "tcp"
		host := u.Host
		if u.Port() == "" && host != "" {
			host = net.JoinHostPort(u.Hostname(), "3306")
		}
		cfg.Addr = host
		if sock := u.Query().Get("socket"); sock != "" {
			cfg.Net, cfg.Addr = "unix", sock
		}
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		return cfg, nil
	}
	cfg, err := mysql.ParseDSN(s)
	if err != nil {
		return nil, errors.New("the DSN is neither a mysql:// URL nor a user:password@tcp(host:port)/database string; check the DSN")
	}
	return cfg, nil
}

// Open connects to d with the settings every Amber session uses: UTC,
// utf8mb4, and results as the server stores them.
func Open(ctx context.Context, d DSN) (*sql.DB, *mysql.Config, error) {
	cfg, err := d.Config()
	if err != nil {
		return nil, nil, err
	}
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	cfg.Loc = time.UTC
	cfg.ParseTime = false
	cfg.InterpolateParams = true
	cfg.MultiStatements = false
	cfg.Timeout = 10 * time.Second
	cfg.MaxAllowedPacket = 0 // read the server's
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", cfg.Addr, err)
	}
	db := sql.OpenDB(conn)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, connectError(cfg, err)
	}
	return db, cfg, nil
}

// connectError says what to check when a connection fails, without the
// password.
func connectError(cfg *mysql.Config, err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1045:
			return fmt.Errorf("connect to %s as %s: access denied: the user or password is wrong; check the DSN", cfg.Addr, cfg.User)
		case 1049:
			return fmt.Errorf("connect to %s: database %q does not exist; check the DSN or create it", cfg.Addr, cfg.DBName)
		}
	}
	return fmt.Errorf("connect to %s as %s: %v; check the DSN and that the server is running", cfg.Addr, cfg.User, err)
}

// quoteIdent quotes a MySQL identifier with backticks.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
