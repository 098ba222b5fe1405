package myengine

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"
)

// rowSession is a dump session that reads table rows. It speaks through
// go-mysql's client rather than go-sql-driver: a streaming read there
// parses every row into the same values, reusing their buffers, while
// go-sql-driver allocates for each value it hands to database/sql (an
// interface holding a slice, or a boxed integer), which was the largest
// part of a logical dump's CPU.
type rowSession struct {
	c    *client.Conn
	stop func() bool // ends the context.AfterFunc that closes c on cancel
}

// openRowSession connects to the server cfg names (the DSN's address,
// user, password, database, TLS) with the session settings of a dump
// session: UTC, results as the server stores them (character_set_results
// = binary), REPEATABLE READ, and a long net_write_timeout. Cancelling
// ctx closes the connection, which ends a read in progress.
func openRowSession(ctx context.Context, cfg *mysql.Config) (*rowSession, error) {
	var opts []client.Option
	if cfg.TLS != nil {
		tc := cfg.TLS
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(tc); return nil })
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := client.ConnectWithDialer(ctx, cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName, d.DialContext, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect a dump session to %s as %s: %v; check the DSN and that the server is running", cfg.Addr, cfg.User, err)
	}
	s := &rowSession{c: c}
	s.stop = context.AfterFunc(ctx, func() { c.Close() })
	for _, q := range []string{"SET SESSION time_zone = '+00:00'", "SET SESSION character_set_results = binary",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "SET SESSION net_write_timeout = 3600"} {
		if err := s.exec(ctx, q); err != nil {
			s.Close()
			return nil, fmt.Errorf("prepare dump session: %w", err)
		}
	}
	return s, nil
}

// exec runs a statement that returns no rows.
func (s *rowSession) exec(ctx context.Context, q string) error {
	r, err := s.c.Execute(q)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	r.Close()
	return nil
}

// value runs a query that returns one value and gives it as an SQL
// literal of kind k.
func (s *rowSession) value(ctx context.Context, q string, k valueKind) (string, error) {
	r, err := s.c.Execute(q)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", err
	}
	defer r.Close()
	if r.Resultset == nil || len(r.Values) != 1 || len(r.Values[0]) != 1 {
		return "", fmt.Errorf("%s: want one value", q)
	}
	return string(appendField(nil, k, &r.Values[0][0])), nil
}

// stream runs query and calls row for every row, with values valid only
// until row returns. Every value arrives as the server's text (rawFields).
func (s *rowSession) stream(ctx context.Context, query string, row func([]gomysql.FieldValue) error) error {
	var res gomysql.Result
	err := s.c.ExecuteSelectStreaming(query, &res, row, func(r *gomysql.Result) error {
		rawFields(r.Fields)
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Close ends the session.
func (s *rowSession) Close() {
	s.stop()
	s.c.Close()
}

// rawFields makes go-mysql keep the text of every column of a result
// rather than parse integers and floats from it: a dump writes numbers as
// the server prints them (kindNumber), so parsing them only to print them
// again would be work for nothing.
func rawFields(fields []*gomysql.Field) {
	for _, f := range fields {
		f.Type = gomysql.MYSQL_TYPE_VAR_STRING
	}
}

// appendRow appends one row's values, as go-mysql's text rows give them,
// as a parenthesized list of SQL literals.
func appendRow(b []byte, kinds []valueKind, vals []gomysql.FieldValue) ([]byte, error) {
	if len(vals) != len(kinds) {
		return b, fmt.Errorf("a row of %d values for %d columns", len(vals), len(kinds))
	}
	b = append(b, '(')
	for k := range vals {
		if k > 0 {
			b = append(b, ',')
		}
		b = appendField(b, kinds[k], &vals[k])
	}
	return append(b, ')'), nil
}

// appendField appends v, a value of a column of kind k, as an SQL
// literal. In a dump's rows every value is the server's text (rawFields);
// a parsed integer or float (a single value read with value) is printed
// back, a float in the fewest digits that read back as the same float64,
// which the server's own text of a FLOAT or DOUBLE is.
func appendField(b []byte, k valueKind, v *gomysql.FieldValue) []byte {
	switch v.Type {
	case gomysql.FieldValueTypeNull:
		return append(b, "NULL"...)
	case gomysql.FieldValueTypeSigned:
		return strconv.AppendInt(b, v.AsInt64(), 10)
	case gomysql.FieldValueTypeUnsigned:
		return strconv.AppendUint(b, v.AsUint64(), 10)
	case gomysql.FieldValueTypeFloat:
		return strconv.AppendFloat(b, v.AsFloat64(), 'g', -1, 64)
	}
	return appendValue(b, k, v.AsString())
}
