package pgengine

import (
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// fileStamp identifies one version of a file for incremental backups: its
// size, modification and change times in nanoseconds, inode and mode, and
// the later of the two times. "" when the platform does not say.
func fileStamp(fi fs.FileInfo) (string, time.Time) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", time.Time{}
	}
	m := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	c := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	return fmt.Sprintf("v1 size=%d mtime=%d ctime=%d ino=%d mode=%o", fi.Size(), m.UnixNano(), c.UnixNano(), st.Ino, uint32(fi.Mode())), later(m, c)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
