package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The streams under testdata were recorded from `go test -json -count=1` of
// small throwaway packages: mixed.json holds passing, failing and skipped
// tests and subtests, a build failure, a panic and a test binary that calls
// os.Exit; pass-skip.json one skip among passes; pass.json passes only.
func TestSummary(t *testing.T) {
	tests := []struct {
		file       string
		requireAll bool
		wantLast   string
		wantCode   int
		wantOut    []string
	}{
		{"mixed.json", false, "7 passed, 5 failed, 2 skipped", 1, []string{
			// compiler error and the package it broke
			"broken/broken_test.go:5:28: undefined: undefinedThing\n",
			"FAIL example.com/sample/broken 0.000s [build failed]\n",
			"failed outside any test (build failure, or the test binary exited early): example.com/sample/broken\n",
			// the output of failed tests and subtests, with their package
			"FAIL example.com/sample/bad TestFails\n",
			"    bad_test.go:9: restored rows differ: got 3, want 4\n",
			"FAIL example.com/sample/bad TestSub/broken\n",
			"    bad_test.go:14: byte 7 differs\n",
			"panic: assignment to entry in nil map",
			// a test whose binary exited before it ended
			"FAIL example.com/s2/exit TestExits\n=== RUN   TestExits\n    exit_test.go:8: about to exit\n",
			"did not finish",
			// which tests skipped, and why
			"SKIP example.com/sample/bad TestSub/skipped\n    bad_test.go:15: no versioning\n",
			"SKIP example.com/sample/good TestSkipped\n",
			// package lines
			"ok   example.com/sample/good 0.062s\n",
			"FAIL example.com/sample/crash 0.102s\n",
			// repeated at the end, where the tail of a long output shows it
			"failed tests and their last messages (their whole output is above):\n" +
				"  example.com/sample/bad TestFails\n    bad_test.go:8: some context\n    bad_test.go:9: restored rows differ: got 3, want 4\n",
			"  example.com/sample/bad TestSub/broken\n    bad_test.go:14: byte 7 differs\n",
			"  example.com/sample/crash TestPanics\n    panic: assignment to entry in nil map",
			"  example.com/s2/exit TestExits\n    exit_test.go:8: about to exit\n",
		}},
		{"pass-skip.json", false, "4 passed, 0 failed, 1 skipped", 0, []string{
			"SKIP example.com/sample/good TestSkipped\n    good_test.go:13: server binary not found\n",
		}},
		{"pass-skip.json", true, "4 passed, 0 failed, 1 skipped", 1, []string{
			"FAIL: 1 test(s) skipped, and AMBER_TEST_REQUIRE_ALL=1 requires every test to run: example.com/sample/good.TestSkipped\n",
		}},
		{"pass.json", true, "4 passed, 0 failed, 0 skipped", 0, []string{"ok   example.com/sample/good"}},
	}
	for _, tt := range tests {
		name := strings.TrimSuffix(tt.file, ".json")
		if tt.requireAll {
			name += "/require-all"
		}
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var out, raw bytes.Buffer
			code := run(bytes.NewReader(in), &out, &raw, tt.requireAll)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if last := lines[len(lines)-1]; last != tt.wantLast {
				t.Errorf("last line %q, want %q", last, tt.wantLast)
			}
			if n := strings.Count(out.String(), " passed, "); n != 1 {
				t.Errorf("%d summary lines, want exactly 1", n)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if !bytes.Equal(raw.Bytes(), in) {
				t.Errorf("saved stream differs from the input (%d bytes saved, %d read)", raw.Len(), len(in))
			}
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}

// Passing tests print nothing but their package's line.
func TestPassesAreQuiet(t *testing.T) {
	in, err := os.ReadFile("testdata/pass.json")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	run(bytes.NewReader(in), &out, &bytes.Buffer{}, false)
	if want := "ok   example.com/sample/good 0.026s\n4 passed, 0 failed, 0 skipped\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

// An empty stream (go test failed before running anything) fails.
func TestNoTests(t *testing.T) {
	var out bytes.Buffer
	code := run(strings.NewReader("go: updates to go.mod needed\n"), &out, &bytes.Buffer{}, false)
	if code == 0 {
		t.Error("exit code 0 for a stream without tests")
	}
	want := "go: updates to go.mod needed\nFAIL: no test ran: the input holds no test events from `go test -json`\n0 passed, 0 failed, 0 skipped\n"
	if out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}
