package myengine

import (
	"fmt"
	"strconv"
	"strings"
)

// Pos is a binlog position: the file and byte offset, the GTID set executed
// up to there, and the epoch (a counter raised only when the binlog's
// history forks: a new source server or RESET MASTER).
type Pos struct {
	Epoch uint32
	File  string // "mysql-bin.000042"
	Pos   uint32 // byte position in File
	GTID  string // gtid_binlog_pos (MariaDB) or Executed_Gtid_Set (MySQL)
	// Server names the server whose binlog File is: its server_id
	// (MariaDB) or server_uuid (MySQL); empty when unknown (positions
	// recorded before it was kept).
	Server string
}

// FileNumber returns the number at the end of a binlog file name
// ("mysql-bin.000042" -> 42).
func FileNumber(file string) (uint32, error) {
	i := strings.LastIndexByte(file, '.')
	if i < 0 || i == len(file)-1 {
		return 0, fmt.Errorf("binlog file %q has no .NNNNNN number", file)
	}
	n, err := strconv.ParseUint(file[i+1:], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("binlog file %q: number: %w", file, err)
	}
	return uint32(n), nil
}

// Offset packs the position as file_number<<32 | byte position.
func (p Pos) Offset() uint64 {
	n, _ := FileNumber(p.File)
	return uint64(n)<<32 | uint64(p.Pos)
}

// Text is the human form: "mysql-bin.000042:1532 (0-1-1042)", with
// "<epoch>@" in front when the epoch is not 1.
func (p Pos) Text() string {
	s := p.File + ":" + strconv.FormatUint(uint64(p.Pos), 10)
	if p.Epoch > 1 {
		s = strconv.FormatUint(uint64(p.Epoch), 10) + "@" + s
	}
	if p.GTID != "" {
		s += " (" + p.GTID + ")"
	}
	return s
}

// Token is the exact encoding carried in api.Position.Token:
// "<file>:<pos>\n<gtid set>", then "\nserver=<id>" when Server is known.
func (p Pos) Token() []byte { return p.EndToken(Pos{}) }

// EndToken is the token of an archived segment's end: Token, then, for a
// segment of an epoch that continues an earlier one, "\nbranch=" and the
// branch's text (its position in epoch p.Epoch-1), so that an archiver
// resuming there keeps naming it.
func (p Pos) EndToken(branch Pos) []byte {
	s := p.File + ":" + strconv.FormatUint(uint64(p.Pos), 10) + "\n" + p.GTID
	if p.Server != "" {
		s += "\nserver=" + p.Server
	}
	if branch.File != "" {
		b := branch
		b.Epoch = 1 // the text without an epoch: it is p.Epoch-1
		s += "\nbranch=" + b.Text()
	}
	return []byte(s)
}

// ParseToken reads a Token (or an EndToken, ignoring its branch).
func ParseToken(epoch uint32, b []byte) (Pos, error) {
	p, _, err := ParseEndToken(epoch, b)
	return p, err
}

// ParseEndToken reads an EndToken: the position and, when it holds one,
// the branch of its epoch (in epoch-1; zero otherwise).
func ParseEndToken(epoch uint32, b []byte) (p, branch Pos, err error) {
	lines := strings.Split(string(b), "\n")
	if p, err = ParseText(lines[0]); err != nil {
		return Pos{}, Pos{}, err
	}
	p.Epoch = epoch
	if len(lines) > 1 {
		p.GTID = lines[1]
	}
	for _, l := range lines[min(2, len(lines)):] {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "server":
			p.Server = v
		case "branch":
			if branch, err = ParseText(v); err != nil {
				return Pos{}, Pos{}, fmt.Errorf("branch in token: %w", err)
			}
			branch.Epoch = epoch - 1
			branch.Server = ""
		}
	}
	return p, branch, nil
}

// ParseText parses "mysql-bin.000042:1532", optionally with an epoch in
// front ("2@mysql-bin.000042:1532") and a GTID set behind in parentheses
// ("mysql-bin.000042:1532 (0-1-1042)"). Without an epoch, Epoch is 0:
// "the epoch that holds this offset".
func ParseText(s string) (Pos, error) {
	s = strings.TrimSpace(s)
	var p Pos
	if i := strings.IndexByte(s, '('); i >= 0 && strings.HasSuffix(s, ")") {
		p.GTID = strings.TrimSpace(s[i+1 : len(s)-1])
		s = strings.TrimSpace(s[:i])
	}
	if e, rest, ok := strings.Cut(s, "@"); ok {
		n, err := strconv.ParseUint(e, 10, 32)
		if err != nil || n == 0 {
			return Pos{}, fmt.Errorf("position %q: the epoch before @ must be a positive number (write mysql-bin.000042:1532 or 2@mysql-bin.000042:1532)", s)
		}
		p.Epoch, s = uint32(n), rest
	}
	file, off, ok := strings.Cut(s, ":")
	if !ok || file == "" {
		return Pos{}, fmt.Errorf("position %q is not <binlog file>:<byte position> (write mysql-bin.000042:1532)", s)
	}
	if _, err := FileNumber(file); err != nil {
		return Pos{}, fmt.Errorf("position %q: %w (write mysql-bin.000042:1532)", s, err)
	}
	n, err := strconv.ParseUint(off, 10, 32)
	if err != nil {
		return Pos{}, fmt.Errorf("position %q: the byte position after ':' must be a number below 2^32 (write mysql-bin.000042:1532)", s)
	}
	p.File, p.Pos = file, uint32(n)
	return p, nil
}
