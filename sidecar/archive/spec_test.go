package archive

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestSpecSegmentMetaKeys: the segment metadata keys that
// docs/repository-format.md specifies are exactly those the sink writes and
// readers use (the Meta* constants of sink.go, and of sidecar/repo for the
// branch keys prune reads too).
func TestSpecSegmentMetaKeys(t *testing.T) {
	spec, err := os.ReadFile("../../docs/repository-format.md")
	if err != nil {
		t.Fatal(err)
	}
	var src []byte
	for _, f := range []string{"sink.go", "../repo/logretention.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	s := string(spec)
	i := strings.Index(s, "`meta` keys, all strings:")
	if i < 0 {
		t.Fatal("the spec has no table of segment meta keys")
	}
	table := s[i:]
	if j := strings.Index(table, "\n\n"+"What names"); j > 0 {
		table = table[:j]
	}
	var inSpec []string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(first, -1) {
			inSpec = append(inSpec, m[1])
		}
	}
	var inCode []string
	for _, m := range regexp.MustCompile(`(?m)^\s*Meta\w+\s*=\s*"([a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		inCode = append(inCode, m[1])
	}
	sort.Strings(inSpec)
	sort.Strings(inCode)
	if len(inCode) == 0 || strings.Join(inSpec, " ") != strings.Join(inCode, " ") {
		t.Fatalf("segment meta keys: the spec has %v, the code %v", inSpec, inCode)
	}
	// The keys the constants name are the ones the code uses.
	for k, v := range map[string]string{MetaStart: "start", MetaStartToken: "start_token", MetaEnd: "end",
		MetaEndToken: "end_token", MetaBranch: "branch", MetaBranchToken: "branch_token",
		MetaBranchEpoch: "branch_epoch", MetaBranchOffset: "branch_offset", MetaFileSize: "file_size"} {
		if k != v {
			t.Errorf("constant for %q is %q", v, k)
		}
	}
}
