package myengine

import "testing"

func TestParseText(t *testing.T) {
	for _, c := range []struct {
		in     string
		want   Pos
		offset uint64
	}{
		{"mysql-bin.000042:1532", Pos{File: "mysql-bin.000042", Pos: 1532}, 42<<32 | 1532},
		{"2@mysql-bin.000042:1532", Pos{Epoch: 2, File: "mysql-bin.000042", Pos: 1532}, 42<<32 | 1532},
		{"mysql-bin.000043:4 (0-1-1042)", Pos{File: "mysql-bin.000043", Pos: 4, GTID: "0-1-1042"}, 43<<32 | 4},
	} {
		got, err := ParseText(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got != c.want || got.Offset() != c.offset {
			t.Errorf("%s: got %+v offset %#x, want %+v offset %#x", c.in, got, got.Offset(), c.want, c.offset)
		}
		back, err := ParseToken(got.Epoch, got.Token())
		if err != nil || back != got {
			t.Errorf("%s: token round trip gave %+v, %v", c.in, back, err)
		}
	}
	for _, bad := range []string{"", "mysql-bin:12", "mysql-bin.000001", "x@mysql-bin.000001:4", "mysql-bin.000001:99999999999", "0/3000060"} {
		if _, err := ParseText(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if got := (Pos{Epoch: 1, File: "mysql-bin.000042", Pos: 1532, GTID: "0-1-1042"}).Text(); got != "mysql-bin.000042:1532 (0-1-1042)" {
		t.Errorf("Text() = %q", got)
	}
}

func FuzzParseText(f *testing.F) {
	f.Add("2@mysql-bin.000042:1532 (0-1-1)")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseText(s)
		if err != nil {
			return
		}
		if _, err := ParseText(p.Text()); err != nil {
			t.Errorf("%q parsed to %+v whose text %q does not parse: %v", s, p, p.Text(), err)
		}
	})
}
