package pgengine

import "testing"

func TestWALNames(t *testing.T) {
	for _, tc := range []struct {
		tli  uint32
		lsn  string
		size int64
		want string
	}{
		{1, "0/1000000", 16 << 20, "000000010000000000000001"},
		{1, "0/1FFFFFF", 16 << 20, "000000010000000000000001"},
		{2, "16/B374D848", 16 << 20, "0000000200000016000000B3"},
		{3, "1/40000000", 1 << 30, "000000030000000100000001"},
	} {
		lsn, err := ParseLSN(tc.lsn)
		if err != nil {
			t.Fatal(err)
		}
		if lsn.String() != tc.lsn {
			t.Errorf("LSN round trip %q -> %q", tc.lsn, lsn)
		}
		got := WALFileName(tc.tli, lsn, tc.size)
		if got != tc.want {
			t.Errorf("WALFileName(%d, %s) = %s, want %s", tc.tli, lsn, got, tc.want)
		}
		tli, start, err := ParseWALFileName(got, tc.size)
		if err != nil || tli != tc.tli || start != SegmentStart(lsn, tc.size) {
			t.Errorf("ParseWALFileName(%s) = %d, %s, %v", got, tli, start, err)
		}
	}
	if HistoryFileName(10) != "0000000A.history" {
		t.Error(HistoryFileName(10))
	}
	for _, bad := range []string{"", "0", "/", "x/1", "1/", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/", "/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		if l2, err := ParseLSN(l.String()); err != nil || l2 != l {
			t.Fatalf("%q -> %s -> %s, %v", s, l, l2, err)
		}
	})
}

func FuzzParseWALFileName(f *testing.F) {
	f.Add("000000010000000000000001")
	f.Add("0000000200000016000000B3")
	f.Fuzz(func(t *testing.T, s string) {
		tli, start, err := ParseWALFileName(s, DefaultWALSegmentSize)
		if err != nil {
			return
		}
		_ = WALFileName(tli, start, DefaultWALSegmentSize)
	})
}
