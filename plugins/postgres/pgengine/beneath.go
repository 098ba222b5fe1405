package pgengine

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// tree writes files strictly beneath one directory, whatever the names
// say and whatever is already there: every path is opened one component at
// a time relative to the directory's descriptor, with openat2's
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (or O_NOFOLLOW on kernels without
// openat2), so neither ".." nor a symlink, planted by an earlier tar entry
// or by anyone else, can lead a write outside it.
type tree struct {
	fd   int
	path string // for messages
}

func openTree(dir string) (*tree, error) {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &tree{fd: fd, path: dir}, nil
}

func (t *tree) Close() error { return unix.Close(t.fd) }

// splitRel checks a slash-separated relative name and returns its
// components. Absolute names and ".." components are refused; "." and empty
// components are dropped.
func splitRel(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("entry %q has an absolute name", name)
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("entry %q climbs out with \"..\"", name)
		}
		out = append(out, c)
	}
	return out, nil
}

// openat opens name (one component) in dirfd without following symlinks
// and without leaving dirfd.
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	how := unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat2(dirfd, name, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			// No openat2 (kernel < 5.6): one component that is not ".."
			// opened with O_NOFOLLOW is just as confined.
			return unix.Openat(dirfd, name, flags, mode)
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && attempt < 16:
			continue
		default:
			return -1, err
		}
	}
}

// dir returns a descriptor of the directory named by comps, creating
// missing components with mode when create is set. A component that exists
// as anything but a real directory (a symlink included) is an error.
func (t *tree) dir(comps []string, create bool, mode uint32) (int, error) {
	cur, err := unix.Dup(t.fd)
	if err != nil {
		return -1, err
	}
	for _, c := range comps {
		if create {
			if err := unix.Mkdirat(cur, c, mode); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("mkdir %s: %w", c, err)
			}
		}
		next, err := openat(cur, c, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(cur)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EXDEV) {
				return -1, fmt.Errorf("%s: %s is not a directory beneath %s", strings.Join(comps, "/"), c, t.path)
			}
			return -1, fmt.Errorf("open %s: %w", c, err)
		}
		cur = next
	}
	return cur, nil
}

// Mkdir makes the directory name and any missing parents.
func (t *tree) Mkdir(name string, mode os.FileMode) error {
	comps, err := splitRel(name)
	if err != nil {
		return err
	}
	fd, err := t.dir(comps, true, uint32(mode.Perm()|0o700))
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// Create creates or truncates the regular file name (making missing parent
// directories) and returns it open for writing. An existing symlink or
// non-regular file at name is an error, never followed.
func (t *tree) Create(name string, mode os.FileMode) (*os.File, error) {
	comps, err := splitRel(name)
	if err != nil {
		return nil, err
	}
	if len(comps) == 0 {
		return nil, fmt.Errorf("entry %q names no file", name)
	}
	parent, err := t.dir(comps[:len(comps)-1], true, 0o700)
	if err != nil {
		return nil, err
	}
	defer unix.Close(parent)
	base := comps[len(comps)-1]
	// Truncate only after checking what was opened: a hard link to a
	// file elsewhere must not lose its content.
	fd, err := openat(parent, base, unix.O_CREAT|unix.O_WRONLY, uint32(mode.Perm()))
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return nil, fmt.Errorf("%s is a symlink; refusing to write through it", name)
		}
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink > 1 {
		f.Close()
		return nil, fmt.Errorf("%s is not a plain regular file; refusing to write to it", name)
	}
	if err := unix.Ftruncate(fd, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return f, nil
}

// SetTimes sets the modification and access times of the file name
// without following a symlink.
func (t *tree) SetTimes(name string, mtime time.Time) error {
	comps, err := splitRel(name)
	if err != nil || len(comps) == 0 {
		return err
	}
	parent, err := t.dir(comps[:len(comps)-1], false, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return unix.UtimesNanoAt(parent, comps[len(comps)-1], []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
