// Command testsummary reads the event stream of `go test -json` on stdin,
// saves it to a file, prints a readable account as it goes (the output of
// failed tests, one line per package, every skipped test), repeats each
// failed test's last messages in a list near the end (where the tail of a
// long output still shows why) and ends with exactly one line:
//
//	N passed, N failed, N skipped
//
// It exits non-zero when a test failed, a package failed (a build failure,
// or a test binary that exited or timed out), no test ran at all, or, with
// -require-all (default: AMBER_TEST_REQUIRE_ALL=1), any test skipped.
//
// Usage:
//
//	go test -json ./... | testsummary -json results.json
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

func main() {
	jsonPath := flag.String("json", "", "also save the raw event stream to this file")
	requireAll := flag.Bool("require-all", os.Getenv("AMBER_TEST_REQUIRE_ALL") == "1",
		"fail when any test skipped (default: AMBER_TEST_REQUIRE_ALL=1)")
	flag.Parse()
	var raw io.Writer = io.Discard
	if *jsonPath != "" {
		if err := os.MkdirAll(filepath.Dir(*jsonPath), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: create the directory for %s: %v\n", *jsonPath, err)
			os.Exit(2)
		}
		f, err := os.Create(*jsonPath)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: create %s: %v\n", *jsonPath, err)
			os.Exit(2)
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		raw = bw
	}
	out := bufio.NewWriter(os.Stdout)
	code := run(os.Stdin, out, raw, *requireAll)
	out.Flush()
	if f, ok := raw.(*bufio.Writer); ok {
		if err := f.Flush(); err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: save %s: %v\n", *jsonPath, err)
			code = max(code, 2)
		}
	}
	os.Exit(code)
}

// event is one line of `go test -json` (cmd/test2json), including the build
// events that go test emits since Go 1.24.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	Elapsed     float64
	ImportPath  string
	FailedBuild string
}

type key struct{ pkg, test string }

// summary is what has been seen of the stream so far.
type summary struct {
	out io.Writer
	// Counts of the pass, fail and skip events that carry a Test field:
	// every test and every subtest counts once (a parent test whose subtest
	// failed fails too, and counts too). A test that started but never
	// ended, because its test binary exited or timed out, counts as failed.
	passed, failed, skipped int
	started                 int // run events
	output                  map[key][]string
	running                 map[key]bool
	skippedNames            []string
	failedPkgs              []string
	brokenPkgs              []string // failed with no failed test: build failure, exit, timeout
	failedIn                map[string]int
	// The last message lines (file.go:N: ...) of each failed test, in the
	// order the tests failed: repeated at the end, where a reader of the
	// tail of the output (a CI page) sees why, even after a test's long
	// output.
	headlines []failure
}

type failure struct {
	key
	lines []string
}

// headlinesPerTest is how many of a failed test's last messages the closing
// list repeats; maxHeadline how much of each.
const (
	headlinesPerTest  = 4
	maxHeadline       = 400
	maxFailuresListed = 20
)

// messageLine matches the first line of a t.Log/t.Error/t.Fatal message as
// go test prints it (indented, then file.go:line: ), and a panic's.
var messageLine = regexp.MustCompile(`^(\s+[\w.-]+\.go:\d+: |panic: )`)

// run reads the stream from in, copies it to raw and reports to out. It
// returns the process exit code.
func run(in io.Reader, out io.Writer, raw io.Writer, requireAll bool) int {
	s := &summary{out: out, output: map[key][]string{}, running: map[key]bool{}, failedIn: map[string]int{}}
	r := bufio.NewReader(in)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			raw.Write(line)
			s.line(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(out, "testsummary: read the test stream: %v\n", err)
			s.failedPkgs = append(s.failedPkgs, "(unreadable stream)")
			break
		}
	}
	// Whatever is still running when the stream ends never finished.
	for _, k := range s.stillRunning("") {
		s.unfinished(k)
	}

	code := 0
	if s.failed > 0 || len(s.failedPkgs) > 0 {
		code = 1
	}
	if len(s.brokenPkgs) > 0 {
		sort.Strings(s.brokenPkgs)
		fmt.Fprintf(s.out, "FAIL: %d package(s) failed outside any test (build failure, or the test binary exited early): %s\n",
			len(s.brokenPkgs), strings.Join(s.brokenPkgs, ", "))
	}
	if s.started == 0 && len(s.failedPkgs) == 0 {
		fmt.Fprintln(s.out, "FAIL: no test ran: the input holds no test events from `go test -json`")
		code = 1
	}
	if requireAll && s.skipped > 0 {
		fmt.Fprintf(s.out, "FAIL: %d test(s) skipped, and AMBER_TEST_REQUIRE_ALL=1 requires every test to run: %s\n",
			s.skipped, strings.Join(s.skippedNames, ", "))
		code = 1
	}
	s.listFailures()
	fmt.Fprintf(s.out, "%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	return code
}

func (s *summary) line(b []byte) {
	var e event
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil || e.Action == "" {
		s.out.Write(b) // not an event: pass it through
		return
	}
	k := key{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.out, e.Output)
	case "run":
		if e.Test != "" {
			s.started++
			s.running[k] = true
		}
	case "output":
		s.output[k] = append(s.output[k], e.Output)
	case "pass", "fail", "skip":
		if e.Test == "" {
			s.packageDone(e)
			return
		}
		delete(s.running, k)
		lines := s.output[k]
		delete(s.output, k)
		switch e.Action {
		case "pass":
			s.passed++
		case "fail":
			s.failed++
			s.failedIn[e.Package]++
			fmt.Fprintf(s.out, "FAIL %s %s\n", e.Package, e.Test)
			for _, l := range lines {
				fmt.Fprint(s.out, l)
			}
			s.noteFailure(k, lines)
		case "skip":
			s.skipped++
			s.skippedNames = append(s.skippedNames, e.Package+"."+e.Test)
			fmt.Fprintf(s.out, "SKIP %s %s\n", e.Package, e.Test)
			for _, l := range lines {
				if !strings.HasPrefix(l, "=== ") {
					fmt.Fprint(s.out, l)
				}
			}
		}
	}
}

// packageDone reports a package's end, and its tests that never ended.
func (s *summary) packageDone(e event) {
	for _, k := range s.stillRunning(e.Package) {
		s.unfinished(k)
	}
	k := key{e.Package, ""}
	lines := s.output[k]
	delete(s.output, k)
	switch e.Action {
	case "pass":
		fmt.Fprintf(s.out, "ok   %s %.3fs\n", e.Package, e.Elapsed)
	case "skip":
		fmt.Fprintf(s.out, "?    %s [no test files]\n", e.Package)
	case "fail":
		for _, l := range lines {
			// go test's own summary lines; the line below replaces them.
			t := strings.TrimSpace(l)
			if t == "FAIL" || t == "PASS" || strings.HasPrefix(l, "FAIL\t"+e.Package) || strings.HasPrefix(l, "ok  \t"+e.Package) {
				continue
			}
			fmt.Fprint(s.out, l)
		}
		why := ""
		if e.FailedBuild != "" {
			why = " [build failed]"
		}
		fmt.Fprintf(s.out, "FAIL %s %.3fs%s\n", e.Package, e.Elapsed, why)
		s.failedPkgs = append(s.failedPkgs, e.Package)
		if s.failedIn[e.Package] == 0 {
			s.brokenPkgs = append(s.brokenPkgs, e.Package)
		}
	}
}

// unfinished reports a test that started and never ended as failed.
func (s *summary) unfinished(k key) {
	delete(s.running, k)
	s.failed++
	s.failedIn[k.pkg]++
	fmt.Fprintf(s.out, "FAIL %s %s\n", k.pkg, k.test)
	for _, l := range s.output[k] {
		fmt.Fprint(s.out, l)
	}
	s.noteFailure(k, s.output[k])
	delete(s.output, k)
	fmt.Fprintf(s.out, "--- FAIL: %s (did not finish: its test binary exited or timed out)\n", k.test)
}

// noteFailure keeps the last message lines of a failed test for listFailures.
func (s *summary) noteFailure(k key, lines []string) {
	var heads []string
	for _, l := range lines {
		if messageLine.MatchString(l) {
			l = strings.TrimRight(strings.TrimSpace(l), "\n")
			if len(l) > maxHeadline {
				l = l[:maxHeadline] + " …"
			}
			heads = append(heads, l)
		}
	}
	if len(heads) > headlinesPerTest {
		heads = heads[len(heads)-headlinesPerTest:]
	}
	s.headlines = append(s.headlines, failure{k, heads})
}

// listFailures repeats, just before the count, each failed test's last
// messages.
func (s *summary) listFailures() {
	if len(s.headlines) == 0 {
		return
	}
	fmt.Fprintln(s.out, "failed tests and their last messages (their whole output is above):")
	for i, f := range s.headlines {
		if i == maxFailuresListed {
			fmt.Fprintf(s.out, "  ... and %d more\n", len(s.headlines)-i)
			break
		}
		fmt.Fprintf(s.out, "  %s %s\n", f.pkg, f.test)
		for _, l := range f.lines {
			fmt.Fprintf(s.out, "    %s\n", l)
		}
	}
}

// stillRunning lists the tests of pkg (of every package when pkg is empty)
// that started and have not ended, in order.
func (s *summary) stillRunning(pkg string) []key {
	var ks []key
	for k := range s.running {
		if pkg == "" || k.pkg == pkg {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].pkg != ks[j].pkg {
			return ks[i].pkg < ks[j].pkg
		}
		return ks[i].test < ks[j].test
	})
	return ks
}
