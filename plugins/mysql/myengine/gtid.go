package myengine

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// gtidState is the GTID set of a binlog up to a point, advanced event by
// event: MariaDB's position (the last GTID of each domain, as
// gtid_binlog_pos prints it) or MySQL's executed set.
type gtidState struct {
	mariadb bool
	domains map[uint32]mariaGTID // MariaDB
	mysql   *gomysql.MysqlGTIDSet
}

// mariaGTID is one MariaDB GTID, domain-server-seq.
type mariaGTID struct {
	domain, server uint32
	seq            uint64
}

func (g mariaGTID) String() string { return fmt.Sprintf("%d-%d-%d", g.domain, g.server, g.seq) }

func newGTIDState(mariadb bool, set string) (*gtidState, error) {
	s := &gtidState{mariadb: mariadb}
	if mariadb {
		d, err := parseMariaPos(set)
		if err != nil {
			return nil, err
		}
		s.domains = d
		return s, nil
	}
	m, err := gomysql.ParseMysqlGTIDSet(strings.ReplaceAll(set, "\n", ""))
	if err != nil {
		return nil, fmt.Errorf("GTID set %q: %w", set, err)
	}
	s.mysql = m.(*gomysql.MysqlGTIDSet)
	return s, nil
}

// parseMariaPos reads "0-1-42,1-2-7" into domain -> GTID.
func parseMariaPos(set string) (map[uint32]mariaGTID, error) {
	m := map[uint32]mariaGTID{}
	for _, g := range strings.Split(set, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		p := strings.Split(g, "-")
		if len(p) != 3 {
			return nil, fmt.Errorf("MariaDB GTID %q is not domain-server-sequence", g)
		}
		d, err1 := strconv.ParseUint(p[0], 10, 32)
		sv, err2 := strconv.ParseUint(p[1], 10, 32)
		seq, err3 := strconv.ParseUint(p[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("MariaDB GTID %q is not domain-server-sequence", g)
		}
		if old, ok := m[uint32(d)]; !ok || seq > old.seq {
			m[uint32(d)] = mariaGTID{uint32(d), uint32(sv), seq}
		}
	}
	return m, nil
}

func formatMariaPos(m map[uint32]mariaGTID) string {
	out := make([]string, 0, len(m))
	for _, d := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[d].String())
	}
	return strings.Join(out, ",")
}

// String prints the state as the server would.
func (s *gtidState) String() string {
	if s == nil {
		return ""
	}
	if s.mariadb {
		return formatMariaPos(s.domains)
	}
	return s.mysql.String()
}

// addMaria records a MariaDB GTID (a transaction's GTID event, or an entry
// of a Gtid_list event at the head of a file).
func (s *gtidState) addMaria(domain, server uint32, seq uint64) {
	if old, ok := s.domains[domain]; !ok || seq >= old.seq {
		s.domains[domain] = mariaGTID{domain, server, seq}
	}
}

// missingGTIDs is what of want has (not) been applied according to have:
// "" when have holds all of want. MariaDB positions compare sequence
// numbers per domain (as gtid_strict_mode orders them); MySQL sets are
// subtracted. Both are given as the servers print them.
func missingGTIDs(mariadb bool, want string, have ...string) (string, error) {
	if mariadb {
		w, err := parseMariaPos(want)
		if err != nil {
			return "", err
		}
		h := map[uint32]mariaGTID{}
		for _, s := range have {
			m, err := parseMariaPos(s)
			if err != nil {
				return "", err
			}
			for d, g := range m {
				if old, ok := h[d]; !ok || g.seq > old.seq {
					h[d] = g
				}
			}
		}
		var miss []string
		for _, d := range slices.Sorted(maps.Keys(w)) {
			g, ok := h[d]
			switch {
			case !ok:
				miss = append(miss, fmt.Sprintf("domain %d up to %s (none applied)", d, w[d]))
			case g.seq < w[d].seq:
				miss = append(miss, fmt.Sprintf("domain %d after %s up to %s", d, g, w[d]))
			}
		}
		return strings.Join(miss, ", "), nil
	}
	ws, err := gomysql.ParseMysqlGTIDSet(strings.ReplaceAll(want, "\n", ""))
	if err != nil {
		return "", fmt.Errorf("GTID set %q: %w", want, err)
	}
	w := ws.(*gomysql.MysqlGTIDSet)
	for _, s := range have {
		hs, err := gomysql.ParseMysqlGTIDSet(strings.ReplaceAll(s, "\n", ""))
		if err != nil {
			return "", fmt.Errorf("GTID set %q: %w", s, err)
		}
		if err := w.Minus(*hs.(*gomysql.MysqlGTIDSet)); err != nil {
			return "", err
		}
	}
	return w.String(), nil
}
