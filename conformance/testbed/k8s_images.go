package testbed

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image references the test bed builds. Pods use them with
// imagePullPolicy Never (or IfNotPresent): nothing is pulled.
const (
	pauseImageRef = "localhost/amber/pause:testbed"
	// PostgresImageRef is PostgreSQL 15 from this machine's packages on a
	// busybox shell; PostgresImageUID is its postgres user (and group).
	PostgresImageRef = "localhost/amber/postgres:15"
	PostgresImageUID = 70
	// AmberImageRef holds amber and the engine plugins in /usr/local/bin.
	AmberImageRef = "localhost/amber/amber:testbed"
	// AmberImageUser runs the amber image: distroless's nonroot, numeric
	// so the kubelet can check runAsNonRoot. The Dockerfile at the
	// repository root builds the same layout (controller/internal/image
	// checks that they agree).
	AmberImageUser = "65532:65532"
	// AmberImageCABundle is where the amber image has its CA certificates.
	AmberImageCABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// PostgresImageBin is where the PostgreSQL programs are in the image.
const PostgresImageBin = "/usr/lib/postgresql/15/bin"

// pauseSource is the pod sandbox's program: it reaps children and exits on
// SIGINT or SIGTERM.
const pauseSource = `#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/wait.h>
static void on_term(int s){ (void)s; _exit(0); }
static void on_chld(int s){ (void)s; while (waitpid(-1, NULL, WNOHANG) > 0); }
int main(void){
  signal(SIGINT, on_term); signal(SIGTERM, on_term); signal(SIGCHLD, on_chld);
  for(;;) pause();
  return 0;
}
`

// writePauseImage compiles the pause program statically and writes the pause
// image's tarball into dir.
func writePauseImage(ctx context.Context, dir string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", &MissingError{Reason: "gcc not found (it builds the pod sandbox's pause program; Debian packages gcc and libc6-dev)"}
	}
	src := filepath.Join(dir, "pause.c")
	bin := filepath.Join(dir, "pause")
	if err := os.WriteFile(src, []byte(pauseSource), 0o644); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, gcc, "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("compile pause (needs libc6-dev for -static): %w: %s", err, out)
	}
	out := filepath.Join(dir, "pause.tar")
	err = writeImage(out, pauseImageRef, v1.Config{Entrypoint: []string{"/pause"}}, func(l *layerTar) error {
		return l.copyFile("/pause", bin, 0o755)
	})
	return out, err
}

// imageBuilds caches built images per kind and directory for this process.
var imageBuilds = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func cachedImage(t testing.TB, kind, dir string, build func(out string) error) string {
	t.Helper()
	imageBuilds.Lock()
	defer imageBuilds.Unlock()
	key := kind + "\x00" + dir
	if out, ok := imageBuilds.m[key]; ok {
		if _, err := os.Stat(out); err == nil {
			return out
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, kind+".tar")
	t0 := time.Now()
	if err := build(out); err != nil {
		var missing *MissingError
		if errors.As(err, &missing) {
			Skip(t, "build %s image: %s", kind, missing.Reason)
		}
		t.Fatalf("build %s image: %v", kind, err)
	}
	st, _ := os.Stat(out)
	var size int64
	if st != nil {
		size = st.Size()
	}
	t.Logf("built %s image %s (%d MB) in %s", kind, out, size>>20, time.Since(t0).Round(10*time.Millisecond))
	imageBuilds.m[key] = out
	return out
}

// BuildPostgresImage writes an image tarball (docker-archive) of PostgreSQL
// 15 into dir: this machine's /usr/lib/postgresql/15 (without the LLVM JIT),
// /usr/share/postgresql/15, the time zone data and the shared libraries ldd
// names, on a busybox-static shell. It runs as uid PostgresImageUID with the
// programs on PATH; the unix socket directory /var/run/postgresql is writable.
// Built once per process and dir; load it with Cluster.LoadImage.
func BuildPostgresImage(t testing.TB, dir string) (ref, tarballPath string) {
	t.Helper()
	return PostgresImageRef, cachedImage(t, "postgres", dir, WritePostgresImage)
}

// WritePostgresImage is BuildPostgresImage without a test and without the
// cache: it writes the tarball to out.
func WritePostgresImage(out string) error {
	const pgLib = "/usr/lib/postgresql/15"
	if _, err := os.Stat(filepath.Join(pgLib, "bin", "postgres")); err != nil {
		return &MissingError{Reason: "PostgreSQL 15 not installed (Debian package postgresql-15)"}
	}
	skip := func(p string) bool {
		b := path.Base(p)
		return strings.HasPrefix(b, "llvmjit") || strings.Contains(p, "/lib/bitcode")
	}
	var elfs []string
	err := filepath.WalkDir(pgLib, func(p string, d fs.DirEntry, err error) error {
		if err != nil || skip(p) {
			if err == nil && d.IsDir() {
				return fs.SkipDir
			}
			return err
		}
		if d.Type().IsRegular() && isDynamicELF(p) {
			elfs = append(elfs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	libs, err := lddLibraries(elfs)
	if err != nil {
		return err
	}
	cfg := v1.Config{
		Env: []string{
			"PATH=" + PostgresImageBin + ":/usr/local/bin:/usr/bin:/bin",
			"LANG=C", "TZ=UTC",
		},
		User:       fmt.Sprintf("%d:%d", PostgresImageUID, PostgresImageUID),
		Entrypoint: []string{"/bin/sh"},
	}
	return writeImage(out, PostgresImageRef, cfg, func(l *layerTar) error {
		if err := l.busyboxBase(); err != nil {
			return err
		}
		for _, tree := range []string{pgLib, "/usr/share/postgresql/15", "/usr/share/zoneinfo"} {
			if err := l.copyTree(tree, skip); err != nil {
				return err
			}
		}
		for _, lib := range libs {
			if err := l.copyFile(lib, lib, 0o755); err != nil {
				return err
			}
		}
		if err := l.dir("/var/run/postgresql", 0o1777); err != nil {
			return err
		}
		return l.dir("/var/lib/postgresql", 0o1777)
	})
}

// BuildAmberImage builds amber and every amber-plugin-* (and
// amber-controller, once it exists) from the module root with go build and writes an image tarball with them in /usr/local/bin
// on a busybox-static shell into dir, with the machine's CA certificates,
// run as AmberImageUser: the layout of the Dockerfile at the repository
// root, plus the shell the tests use. Built once per process and dir.
func BuildAmberImage(t testing.TB, dir string) (ref, tarballPath string) {
	t.Helper()
	return AmberImageRef, cachedImage(t, "amber", dir, func(out string) error {
		return WriteAmberImage(filepath.Join(dir, "amber-bin"), out)
	})
}

// WriteAmberImage is BuildAmberImage without a test and without the cache:
// binaries are built into workDir, the tarball written to out.
func WriteAmberImage(workDir, out string) error {
	return writeAmberImage(workDir, out, AmberImageRef, nil, nil)
}

// writeAmberImage writes the amber image tagged ref with the programs
// extra (host paths, copied to the same paths, with the shared libraries
// they need) added.
func writeAmberImage(workDir, out, ref string, extra []string, missing func(p string) error) error {
	for _, p := range extra {
		if _, err := os.Stat(p); err != nil {
			return missing(p)
		}
	}
	root, err := Root()
	if err != nil {
		return err
	}
	bin := workDir
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	pkgs := []string{"./sidecar/cmd/amber"}
	plugins, _ := filepath.Glob(filepath.Join(root, "plugins", "*", "cmd", "amber-plugin-*"))
	for _, p := range plugins {
		rel, _ := filepath.Rel(root, p)
		pkgs = append(pkgs, "./"+rel)
	}
	if controller := filepath.Join(root, "controller", "cmd", "amber-controller"); dirExists(controller) {
		pkgs = append(pkgs, "./controller/cmd/amber-controller")
	}
	// Built as `make build` and the tests build, so the build cache is
	// shared; the libraries a cgo build links come along.
	if err := goBuild(bin, "", pkgs...); err != nil {
		return err
	}
	ents, err := os.ReadDir(bin)
	if err != nil {
		return err
	}
	var dynamic []string
	for _, e := range ents {
		if isDynamicELF(filepath.Join(bin, e.Name())) {
			dynamic = append(dynamic, filepath.Join(bin, e.Name()))
		}
	}
	for _, p := range extra {
		if isDynamicELF(p) {
			dynamic = append(dynamic, p)
		}
	}
	libs, err := lddLibraries(dynamic)
	if err != nil {
		return err
	}
	if _, err := os.Stat(AmberImageCABundle); err != nil {
		return &MissingError{Reason: "no CA certificates at " + AmberImageCABundle + " (Debian package ca-certificates)"}
	}
	cfg := v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, Entrypoint: []string{"/usr/local/bin/amber"}, User: AmberImageUser}
	return writeImage(out, ref, cfg, func(l *layerTar) error {
		if err := l.busyboxBase(); err != nil {
			return err
		}
		if err := l.copyFile(AmberImageCABundle, AmberImageCABundle, 0o644); err != nil {
			return err
		}
		if err := l.header(&tar.Header{Typeflag: tar.TypeDir, Name: "/home/nonroot", Mode: 0o700, Uid: 65532, Gid: 65532}); err != nil {
			return err
		}
		for _, e := range ents {
			if err := l.copyFile("/usr/local/bin/"+e.Name(), filepath.Join(bin, e.Name()), 0o755); err != nil {
				return err
			}
		}
		for _, p := range extra {
			if err := l.copyFile(p, p, 0o755); err != nil {
				return err
			}
		}
		for _, lib := range libs {
			if err := l.copyFile(lib, lib, 0o755); err != nil {
				return err
			}
		}
		return nil
	})
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// writeImage writes a one-layer image tarball (docker-archive) tagged ref,
// the layer's content made by fill.
func writeImage(out, ref string, cfg v1.Config, fill func(*layerTar) error) error {
	layerPath := out + ".layer"
	f, err := os.Create(layerPath)
	if err != nil {
		return err
	}
	defer os.Remove(layerPath)
	bw := bufio.NewWriterSize(f, 1<<20)
	l := &layerTar{tw: tar.NewWriter(bw), seen: map[string]bool{}}
	err = fill(l)
	if err == nil {
		err = l.tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write layer of %s: %w", ref, err)
	}
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Now().UTC()}
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return fmt.Errorf("write image %s to %s: %w", ref, out, err)
	}
	return nil
}

// layerTar writes a layer's tar, adding parent directories as needed.
type layerTar struct {
	tw   *tar.Writer
	seen map[string]bool
}

func (l *layerTar) parents(p string) error {
	parent := path.Dir(p)
	if parent == "/" || parent == "." || l.seen[parent] {
		return nil
	}
	return l.dir(parent, 0o755)
}

func (l *layerTar) header(h *tar.Header) error {
	p := path.Clean("/" + h.Name)
	if l.seen[p] {
		return nil
	}
	if err := l.parents(p); err != nil {
		return err
	}
	l.seen[p] = true
	h.Name = strings.TrimPrefix(p, "/")
	if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	h.ModTime = time.Unix(0, 0)
	h.Format = tar.FormatPAX
	return l.tw.WriteHeader(h)
}

// dir adds a directory; mode is numeric, as in tar (0o1777 is sticky).
func (l *layerTar) dir(p string, mode int64) error {
	return l.header(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: mode})
}

// tarMode turns a Go file mode into tar's numeric mode.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func (l *layerTar) data(p string, b []byte, mode fs.FileMode) error {
	if l.seen[path.Clean(p)] {
		return nil
	}
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: int64(mode.Perm()), Size: int64(len(b))}); err != nil {
		return err
	}
	_, err := l.tw.Write(b)
	return err
}

// copyFile adds the content of src (symlinks followed) as a regular file p.
func (l *layerTar) copyFile(p, src string, mode fs.FileMode) error {
	if l.seen[path.Clean(p)] {
		return nil
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: int64(mode.Perm()), Size: st.Size()}); err != nil {
		return err
	}
	_, err = io.Copy(l.tw, f)
	return err
}

func (l *layerTar) symlink(p, target string) error {
	return l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777})
}

// copyTree adds a host directory tree at the same path, symlinks as symlinks.
func (l *layerTar) copyTree(root string, skip func(string) bool) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skip != nil && skip(p) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return l.dir(p, tarMode(info.Mode()))
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return l.symlink(p, target)
		case info.Mode().IsRegular():
			return l.copyFile(p, p, info.Mode())
		}
		return nil
	})
}

// busyboxBase adds busybox-static as /bin/busybox with a link per applet,
// users root, postgres (PostgresImageUID), mysql (MariaDBImageUID), nonroot
// and nobody, and /tmp.
func (l *layerTar) busyboxBase() error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return &MissingError{Reason: "busybox not found (Debian package busybox-static)"}
	}
	if isDynamicELF(bb) {
		return &MissingError{Reason: bb + " is dynamically linked; install Debian's busybox-static"}
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	if err := l.copyFile("/bin/busybox", bb, 0o755); err != nil {
		return err
	}
	applets := strings.Fields(string(list))
	sort.Strings(applets)
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := l.symlink("/bin/"+a, "busybox"); err != nil {
			return err
		}
	}
	files := []struct {
		p, data string
	}{
		{"/etc/passwd", fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\npostgres:x:%d:%d:PostgreSQL:/var/lib/postgresql:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\nmysql:x:%d:%d:MariaDB:/nonexistent:/bin/false\n", PostgresImageUID, PostgresImageUID, MariaDBImageUID, MariaDBImageUID)},
		{"/etc/group", fmt.Sprintf("root:x:0:\npostgres:x:%d:\nnogroup:x:65534:\nnonroot:x:65532:\nmysql:x:%d:\n", PostgresImageUID, MariaDBImageUID)},
		{"/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"},
	}
	for _, f := range files {
		if err := l.data(f.p, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	if err := l.dir("/root", 0o700); err != nil {
		return err
	}
	return l.dir("/tmp", 0o1777)
}

// isDynamicELF reports whether p is an ELF file with a program interpreter.
func isDynamicELF(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return true
		}
	}
	return f.Type == elf.ET_DYN && len(f.Progs) > 0 && hasDynamic(f)
}

func hasDynamic(f *elf.File) bool {
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_DYNAMIC {
			return true
		}
	}
	return false
}

// lddLibraries returns the shared libraries (and the dynamic loader) that
// ldd names for the given ELF files, sorted.
func lddLibraries(files []string) ([]string, error) {
	set := map[string]bool{}
	for _, f := range files {
		out, err := exec.Command("ldd", f).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", f, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			fields := strings.Fields(line)
			for i, fld := range fields {
				if strings.HasPrefix(fld, "/") && (i == 0 || fields[i-1] == "=>") {
					set[fld] = true
				}
			}
		}
	}
	libs := make([]string, 0, len(set))
	for l := range set {
		if strings.Contains(l, "/usr/lib/postgresql/") {
			continue
		}
		libs = append(libs, l)
	}
	sort.Strings(libs)
	return libs, nil
}
