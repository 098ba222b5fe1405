package myengine

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"strings"
)

// planJobs lists the data entries of tables: one per table, except that
// an InnoDB table larger than splitSize whose primary key is a single
// integer column is cut into ranges of that key, so that several workers
// read it at once. Bounds come from MIN and MAX of the key read in c's
// snapshot (the one every worker shares); the first range has no lower
// bound and the last no upper one, so every row of the snapshot is in
// exactly one range. A range entry is data/<table>.part-NNNNN.sql.
func planJobs(ctx context.Context, c *sql.Conn, tables []table, splitSize int64, workers int) ([]job, error) {
	names := make(map[string]bool, len(tables))
	for _, t := range tables {
		names[t.name] = true
	}
	var jobs []job
	for _, t := range tables {
		whole := job{t: t, entry: "data/" + t.name + ".sql"}
		if splitSize < 0 || t.sequence || !t.innodb || t.size <= splitSize || partNameTaken(t.name, tables) {
			jobs = append(jobs, whole)
			continue
		}
		col, ok, err := integerKey(ctx, c, t.name)
		if err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", t.name, err)
		}
		if !ok {
			jobs = append(jobs, whole)
			continue
		}
		n := (t.size + splitSize - 1) / splitSize
		n = max(n, int64(2*workers))
		n = min(n, maxRanges)
		bounds, err := keyBounds(ctx, c, t.name, col, n)
		if err != nil {
			return nil, fmt.Errorf("key range of %s: %w", t.name, err)
		}
		if len(bounds) == 0 {
			jobs = append(jobs, whole)
			continue
		}
		qc := quoteIdent(col)
		for k := 0; k <= len(bounds); k++ {
			var conds []string
			if k > 0 {
				conds = append(conds, qc+" >= "+bounds[k-1])
			}
			if k < len(bounds) {
				conds = append(conds, qc+" < "+bounds[k])
			}
			jobs = append(jobs, job{t: t, entry: fmt.Sprintf("data/%s.part-%05d.sql", t.name, k), where: strings.Join(conds, " AND ")})
		}
	}
	return jobs, nil
}

// partNameTaken: another table's whole entry could share a name with one
// of name's range entries (a table called "<name>.part-00001").
func partNameTaken(name string, tables []table) bool {
	for _, t := range tables {
		if strings.HasPrefix(t.name, name+".part-") {
			return true
		}
	}
	return false
}

// integerKey returns the column of t's primary key when it is one column
// of an integer type.
func integerKey(ctx context.Context, c *sql.Conn, t string) (string, bool, error) {
	rows, err := c.QueryContext(ctx, `SELECT k.COLUMN_NAME, c.DATA_TYPE FROM information_schema.KEY_COLUMN_USAGE k
		JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
		WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY'`, t)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	var cols, types []string
	for rows.Next() {
		var col, typ string
		if err := rows.Scan(&col, &typ); err != nil {
			return "", false, err
		}
		cols, types = append(cols, col), append(types, strings.ToLower(typ))
	}
	if err := rows.Err(); err != nil {
		return "", false, err
	}
	if len(cols) != 1 {
		return "", false, nil
	}
	switch types[0] {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		return cols[0], true, nil
	}
	return "", false, nil
}

// keyBounds reads MIN and MAX of col in t and returns up to n-1 increasing
// cut points that split [MIN, MAX] into n ranges of about equal width;
// none when the table is empty or has a single key.
func keyBounds(ctx context.Context, c *sql.Conn, t, col string, n int64) ([]string, error) {
	qc := quoteIdent(col)
	var lo, hi sql.NullString
	if err := c.QueryRowContext(ctx, "SELECT MIN("+qc+"), MAX("+qc+") FROM "+quoteIdent(t)).Scan(&lo, &hi); err != nil {
		return nil, err
	}
	if !lo.Valid || !hi.Valid {
		return nil, nil
	}
	return cutPoints(lo.String, hi.String, n)
}

// cutPoints splits the integers [lo, hi] into at most n ranges of about
// equal width and returns the first key of every range but the first.
func cutPoints(lo, hi string, n int64) ([]string, error) {
	a, ok1 := new(big.Int).SetString(lo, 10)
	b, ok2 := new(big.Int).SetString(hi, 10)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("key bounds %q, %q are not integers", lo, hi)
	}
	span := new(big.Int).Sub(b, a)
	span.Add(span, big.NewInt(1))
	if span.Cmp(big.NewInt(n)) < 0 {
		n = span.Int64()
	}
	var out []string
	for k := int64(1); k < n; k++ {
		p := new(big.Int).Mul(span, big.NewInt(k))
		p.Quo(p, big.NewInt(n))
		p.Add(p, a)
		out = append(out, p.String())
	}
	return out, nil
}
