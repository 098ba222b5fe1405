package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/amber-backup/amber/conformance/testbed"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, COPY, ...
	Args string
	Line int
}

// parseDockerfile splits a Dockerfile into instructions: comment lines
// (parser directives included) and blank lines dropped, lines ending in a
// backslash joined with the next.
func parseDockerfile(text string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(body)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		full := strings.TrimSpace(cur.String())
		cur.Reset()
		if full == "" {
			continue
		}
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
	}
	if cur.Len() > 0 {
		return nil, errors.New("the Dockerfile ends in a line continuation")
	}
	return out, nil
}

// stages splits instructions at each FROM; stage 0 is what precedes the
// first FROM (ARGs).
func stages(instrs []instruction) [][]instruction {
	out := [][]instruction{nil}
	for _, in := range instrs {
		if in.Cmd == "FROM" {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], in)
	}
	return out
}

// copyInstr is a COPY or ADD: flags, sources and the destination.
type copyInstr struct {
	From string
	Srcs []string
	Dest string
	Line int
}

func parseCopy(in instruction) (copyInstr, error) {
	if strings.HasPrefix(in.Args, "[") {
		return copyInstr{}, fmt.Errorf("line %d: %s in JSON form is not read by this test", in.Line, in.Cmd)
	}
	c := copyInstr{Line: in.Line}
	var rest []string
	for _, f := range strings.Fields(in.Args) {
		if v, ok := strings.CutPrefix(f, "--from="); ok {
			c.From = v
		} else if !strings.HasPrefix(f, "--") {
			rest = append(rest, f)
		}
	}
	if len(rest) < 2 {
		return c, fmt.Errorf("line %d: %s needs a source and a destination", in.Line, in.Cmd)
	}
	c.Srcs, c.Dest = rest[:len(rest)-1], rest[len(rest)-1]
	return c, nil
}

// covers reports whether a COPY to dest puts a file at p: dest is p
// itself, or a directory (ending in /) that p is directly in.
func covers(dest, p string) bool {
	if strings.HasSuffix(dest, "/") {
		return path.Dir(p) == path.Clean(dest)
	}
	return path.Clean(dest) == p
}

// envValue returns name's value set by ENV instructions (key=value form).
func envValue(instrs []instruction, name string) string {
	v := ""
	for _, in := range instrs {
		if in.Cmd != "ENV" {
			continue
		}
		for _, f := range strings.Fields(in.Args) {
			if k, val, ok := strings.Cut(f, "="); ok && k == name {
				v = strings.Trim(val, `"`)
			}
		}
	}
	return v
}

func last(instrs []instruction, cmd string) (instruction, bool) {
	for i := len(instrs) - 1; i >= 0; i-- {
		if instrs[i].Cmd == cmd {
			return instrs[i], true
		}
	}
	return instruction{}, false
}

// compared says which of the test bed image's files the Dockerfile must
// deliver: the binaries and the CA certificates. The rest (busybox, its
// /etc files, shared libraries of a cgo build) is the test bed's shell.
func compared(p string) bool {
	return path.Dir(p) == "/usr/local/bin" || p == testbed.AmberImageCABundle
}

// imageFiles lists the regular files of an image tarball, by absolute path.
func imageFiles(t *testing.T, tarPath string) (files []string, user, pathEnv string, entrypoint []string) {
	t.Helper()
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range cf.Config.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				files = append(files, path.Clean("/"+h.Name))
			}
		}
		rc.Close()
	}
	return files, cf.Config.User, pathEnv, cf.Config.Entrypoint
}

// TestDockerfileMatchesTestbedImage: the Dockerfile's final stage and the
// image the test bed builds agree on user, entrypoint, PATH and the files
// copied in; the build stage builds every binary the test bed's image has.
func TestDockerfileMatchesTestbedImage(t *testing.T) {
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	instrs, err := parseDockerfile(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	st := stages(instrs)
	if len(st) < 3 {
		t.Fatalf("want a build stage and a final stage, found %d stage(s)", len(st)-1)
	}
	final := st[len(st)-1]
	build := st[len(st)-2]

	_, tarPath := testbed.BuildAmberImage(t, t.TempDir())
	files, user, pathEnv, entrypoint := imageFiles(t, tarPath)

	if in, ok := last(final, "USER"); !ok || in.Args != user {
		t.Errorf("Dockerfile USER %q, test bed image user %q", in.Args, user)
	}
	in, ok := last(final, "ENTRYPOINT")
	var ep []string
	if !ok || json.Unmarshal([]byte(in.Args), &ep) != nil {
		t.Errorf("the final stage needs ENTRYPOINT in exec form (a JSON array), found %q", in.Args)
	} else if !slices.Equal(ep, entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %q, test bed image %q", ep, entrypoint)
	}
	if got := envValue(final, "PATH"); got != pathEnv {
		t.Errorf("Dockerfile PATH %q, test bed image %q", got, pathEnv)
	}

	var copies []copyInstr
	for _, in := range final {
		if in.Cmd == "COPY" || in.Cmd == "ADD" {
			c, err := parseCopy(in)
			if err != nil {
				t.Fatal(err)
			}
			copies = append(copies, c)
		}
	}
	var want []string
	for _, f := range files {
		if compared(f) {
			want = append(want, f)
		}
	}
	if !slices.Contains(want, "/usr/local/bin/amber") || !slices.Contains(want, testbed.AmberImageCABundle) {
		t.Fatalf("the test bed image lacks amber or the CA certificates: %v", want)
	}
	// Every file of the layout is copied in by the Dockerfile ...
	for _, f := range want {
		if !slices.ContainsFunc(copies, func(c copyInstr) bool { return covers(c.Dest, f) }) {
			t.Errorf("the test bed image has %s, which no COPY of the Dockerfile's final stage puts there", f)
		}
	}
	// ... and every COPY lands where the test bed image has files.
	for _, c := range copies {
		if !slices.ContainsFunc(want, func(f string) bool { return covers(c.Dest, f) }) {
			t.Errorf("Dockerfile line %d copies to %s, where the test bed image has nothing", c.Line, c.Dest)
		}
	}

	// The binaries: the build stage's go build names each one's package
	// (a glob counts), and writes them where the COPY to /usr/local/bin/
	// takes them from.
	var goBuild string
	for _, in := range build {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			goBuild = in.Args
		}
	}
	if goBuild == "" {
		t.Fatal("no RUN with go build in the Dockerfile's build stage")
	}
	fields := strings.Fields(goBuild)
	outDir := ""
	for i, f := range fields {
		if f == "-o" && i+1 < len(fields) {
			outDir = fields[i+1]
		}
	}
	for _, c := range copies {
		if c.Dest == "/usr/local/bin/" && (len(c.Srcs) != 1 || path.Clean(c.Srcs[0]) != path.Clean(outDir)) {
			t.Errorf("Dockerfile line %d copies %v to /usr/local/bin/, but go build writes to %q", c.Line, c.Srcs, outDir)
		}
	}
	for _, f := range want {
		if path.Dir(f) != "/usr/local/bin" {
			continue
		}
		name := path.Base(f)
		pkgs, _ := filepath.Glob(filepath.Join(root, "*", "cmd", name))
		more, _ := filepath.Glob(filepath.Join(root, "*", "*", "cmd", name))
		pkgs = append(pkgs, more...)
		if len(pkgs) != 1 {
			t.Errorf("binary %s: want one package directory named cmd/%s, found %v", name, name, pkgs)
			continue
		}
		rel, _ := filepath.Rel(root, pkgs[0])
		pkg := "./" + filepath.ToSlash(rel)
		if !slices.ContainsFunc(fields, func(f string) bool { ok, _ := path.Match(f, pkg); return ok }) {
			t.Errorf("binary %s: the Dockerfile's go build does not build %s", name, pkg)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("Dockerfile and test bed image agree: user %s, entrypoint %v, %d files: %v", user, entrypoint, len(want), want)
}

// TestParseDockerfile: continuation lines, comments inside them, and
// stages.
func TestParseDockerfile(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\nARG V=1\nFROM golang AS build\nRUN a \\\n  # a comment\n  b\n\nFROM scratch\nCOPY --from=build --chmod=0755 /out/ /usr/local/bin/\nUSER 1:1\n"
	instrs, err := parseDockerfile(src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range instrs {
		got = append(got, in.Cmd+" "+in.Args)
	}
	want := []string{"ARG V=1", "FROM golang AS build", "RUN a    b", "FROM scratch", "COPY --from=build --chmod=0755 /out/ /usr/local/bin/", "USER 1:1"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	st := stages(instrs)
	if len(st) != 3 || len(st[2]) != 3 {
		t.Fatalf("stages %v", st)
	}
	c, err := parseCopy(st[2][1])
	if err != nil || c.From != "build" || !slices.Equal(c.Srcs, []string{"/out/"}) || c.Dest != "/usr/local/bin/" {
		t.Fatalf("copy %+v %v", c, err)
	}
	if !covers("/usr/local/bin/", "/usr/local/bin/amber") || covers("/usr/local/bin/", "/usr/local/bin/x/y") || covers("/usr/local/bin", "/usr/local/bin/amber") {
		t.Fatal("covers")
	}
}
