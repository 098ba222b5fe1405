package pgengine

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// An incremental BASE_BACKUP (PostgreSQL 17+, summarize_wal=on) sends, for
// a relation file the previous backup's manifest lists, INCREMENTAL.<name>:
// a header (magic, block count, truncation block length, the block
// numbers, padded to a block when it lists any) and the blocks changed
// since that backup. PhysicalBackup never stores such a file: it turns it
// into a patch of the previous backup's record of <name> (PatchMarker), so
// every backup holds whole files and restores alone.
const (
	incrementalMagic  = 0xd3ae1f0d
	incrementalPrefix = "INCREMENTAL."
	blockSize         = 8192    // BLCKSZ; the server's is checked by the header's padding
	relSegBlocks      = 1 << 17 // RELSEG_SIZE: blocks of a 1 GiB segment
)

// IncrementalBase is what an incremental PhysicalBackup needs of the
// previous backup of the same server, taken with Records.
type IncrementalBase struct {
	SystemID string
	// Manifest is the previous backup's backup_manifest, as stored.
	Manifest []byte
	// Records by entry name and key (the file's name in the tar).
	Records map[string]map[string]PreviousRecord
}

// Range is a run of bytes of a file record.
type Range struct{ Off, Len int64 }

// PatchMarker is implemented by the entry writers of a sink that takes
// patched file records: MarkPatch ends the current record and starts one
// named key that is the earlier backup's record base of the same entry,
// its first keep bytes kept, zeros up to length, and ranges replaced by
// the bytes written next (exactly their total length).
type PatchMarker interface {
	FileMarker
	MarkPatch(key, stamp string, length int64, base string, keep int64, ranges []Range) error
}

// recordSink writes a BASE_BACKUP's archives to an EntrySink with every
// regular file marked as a file record; with inc set, it turns incremental
// files into patches of inc's records, drops the incremental lines of
// backup_label and rewrites backup_manifest to list the whole files.
type recordSink struct {
	es  EntrySink
	inc *IncrementalBase

	mu      sync.Mutex
	resized map[string]int64 // manifest path of a rewritten file → its new size
	patched int64
	whole   int64
}

// Entry implements Sink.
func (s *recordSink) Entry(ctx context.Context, name string, r io.Reader) error {
	w, err := s.es.Create(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case strings.HasSuffix(name, ".tar"):
		err = s.tarEntry(name, r, w)
	case name == ManifestEntry && s.inc != nil:
		var b []byte
		if b, err = io.ReadAll(r); err == nil {
			if b, err = s.rewriteManifest(b); err == nil {
				_, err = w.Write(b)
			}
		}
	default:
		_, err = io.Copy(w, r)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordStamp is the stamp of a file record of a BASE_BACKUP archive:
// "bb:<header length>:<file size>:<hash of the header>", the header as
// amber writes it (its length and bytes are all a patch needs of it).
func recordStamp(hdr []byte, size int64) string {
	sum := sha256.Sum256(hdr)
	return fmt.Sprintf("bb:%d:%d:%x", len(hdr), size, sum[:8])
}

// parseRecordStamp reads a recordStamp.
func parseRecordStamp(s string) (hdrLen, size int64, hdrHash string, ok bool) {
	f := strings.Split(s, ":")
	if len(f) != 4 || f[0] != "bb" {
		return 0, 0, "", false
	}
	h, err1 := strconv.ParseInt(f[1], 10, 64)
	n, err2 := strconv.ParseInt(f[2], 10, 64)
	return h, n, f[3], err1 == nil && err2 == nil && h > 0 && n >= 0
}

// plainHeader is the header amber writes for a member: the same for the
// same file in every backup, so its length is known.
func plainHeader(h *tar.Header, name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: h.Typeflag, Name: name, Linkname: h.Linkname, Size: size, Mode: h.Mode,
		ModTime: h.ModTime.Truncate(1e9), Uid: h.Uid, Gid: h.Gid}
}

// tarEntry copies the archive name from r to w member by member.
func (s *recordSink) tarEntry(name string, r io.Reader, w io.Writer) error {
	pm, ok := w.(PatchMarker)
	var fm FileMarker = pm
	if !ok {
		if fm, ok = w.(FileMarker); !ok {
			return errors.New("the sink takes no file records")
		}
		if s.inc != nil {
			return errors.New("the sink takes no patched file records")
		}
	}
	prefix := "" // where the archive's files are, relative to the data directory, in backup_manifest
	if name != BaseTar {
		prefix = "pg_tblspc/" + strings.TrimSuffix(name, ".tar") + "/"
	}
	tw := tar.NewWriter(w)
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<20))
	inRecord := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("archive %s: %w", name, err)
		}
		if err := tw.Flush(); err != nil { // the previous member's padding
			return err
		}
		dir, base := path.Split(h.Name)
		switch {
		case h.Typeflag == tar.TypeReg && strings.HasPrefix(base, incrementalPrefix):
			if s.inc == nil || pm == nil {
				return fmt.Errorf("archive %s: the server sent incremental file %s for a full backup", name, h.Name)
			}
			key := dir + strings.TrimPrefix(base, incrementalPrefix)
			size, err := s.patch(name, key, h, tr, pm, w)
			if err != nil {
				return fmt.Errorf("archive %s: %s: %w", name, h.Name, err)
			}
			s.resize(prefix+key, size)
			inRecord = true
		case h.Typeflag == tar.TypeReg:
			content := io.Reader(tr)
			size := h.Size
			if s.inc != nil && h.Name == backupLabel && name == BaseTar {
				label, err := io.ReadAll(tr)
				if err != nil {
					return err
				}
				label = fullBackupLabel(label)
				content, size = bytes.NewReader(label), int64(len(label))
				s.resize(h.Name, size)
			}
			nh := plainHeader(h, h.Name, size)
			hdr, err := headerBytes(nh)
			if err != nil {
				return fmt.Errorf("archive %s: %s: %w", name, h.Name, err)
			}
			if err := fm.MarkFile(h.Name, recordStamp(hdr, size), 0, false); err != nil {
				return err
			}
			inRecord = true
			if err := tw.WriteHeader(nh); err != nil {
				return err
			}
			if _, err := io.CopyN(tw, content, size); err != nil {
				return fmt.Errorf("archive %s: %s: %w", name, h.Name, err)
			}
			s.mu.Lock()
			s.whole++
			s.mu.Unlock()
		default:
			if inRecord {
				if err := fm.MarkFile("", "", 0, false); err != nil {
					return err
				}
				inRecord = false
			}
			if err := tw.WriteHeader(plainHeader(h, h.Name, 0)); err != nil {
				return err
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if inRecord { // the archive's end belongs to no record
		if err := fm.MarkFile("", "", 0, false); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (s *recordSink) resize(manifestPath string, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resized == nil {
		s.resized = map[string]int64{}
	}
	s.resized[manifestPath] = size
}

// headerBytes is what tar.Writer writes for h.
func headerBytes(h *tar.Header) ([]byte, error) {
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(h); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// incrementalHeader is the head of an INCREMENTAL.<name> file.
type incrementalHeader struct {
	blocks     []uint32 // in the order their contents follow
	truncation uint32   // blocks of the file at the backup's start, as far as the server knows
}

// readIncrementalHeader reads the header of an incremental file of size
// bytes from r, up to its first block.
func readIncrementalHeader(r io.Reader, size int64) (*incrementalHeader, error) {
	var head [12]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, fmt.Errorf("incremental header: %w", err)
	}
	le := binary.LittleEndian
	if m := le.Uint32(head[0:]); m != incrementalMagic {
		return nil, fmt.Errorf("bad incremental magic 0x%x (want 0x%x); only little-endian servers are supported", m, incrementalMagic)
	}
	n, trunc := le.Uint32(head[4:]), le.Uint32(head[8:])
	if n > relSegBlocks || trunc > relSegBlocks {
		return nil, fmt.Errorf("incremental header: %d blocks, truncation length %d: more than a segment", n, trunc)
	}
	h := &incrementalHeader{blocks: make([]uint32, n), truncation: trunc}
	if n > 0 {
		if err := binary.Read(r, le, h.blocks); err != nil {
			return nil, fmt.Errorf("incremental header: %w", err)
		}
	}
	hl := int64(12 + 4*n)
	if n > 0 && hl%blockSize != 0 {
		pad := blockSize - hl%blockSize
		if _, err := io.CopyN(io.Discard, r, pad); err != nil {
			return nil, fmt.Errorf("incremental header: %w", err)
		}
		hl += pad
	}
	if want := hl + int64(n)*blockSize; size != want {
		return nil, fmt.Errorf("incremental file of %d bytes, its header says %d (is the server's block size 8192?)", size, want)
	}
	return h, nil
}

// patch turns the incremental file h (content in r) into a patch of the
// previous backup's record key, written to w; it returns the whole file's
// size.
func (s *recordSink) patch(entry, key string, h *tar.Header, r io.Reader, pm PatchMarker, w io.Writer) (int64, error) {
	ih, err := readIncrementalHeader(r, h.Size)
	if err != nil {
		return 0, err
	}
	prev, ok := s.inc.Records[entry][key]
	if !ok {
		return 0, fmt.Errorf("the previous backup has no record of %s to apply the changed blocks to; take a full backup", key)
	}
	prevHdr, prevSize, prevHash, ok := parseRecordStamp(prev.Stamp)
	if !ok {
		return 0, fmt.Errorf("the previous backup's record of %s has stamp %q, not a BASE_BACKUP file's; take a full backup", key, prev.Stamp)
	}
	blocks := int64(ih.truncation)
	for i, b := range ih.blocks {
		if i > 0 && b <= ih.blocks[i-1] {
			return 0, fmt.Errorf("block numbers out of order (%d after %d)", b, ih.blocks[i-1])
		}
		blocks = max(blocks, int64(b)+1)
	}
	size := blocks * blockSize
	hdr, err := headerBytes(plainHeader(h, key, size))
	if err != nil {
		return 0, err
	}
	hl := int64(len(hdr))
	if hl != prevHdr {
		return 0, fmt.Errorf("its tar header takes %d bytes, the previous backup's %d; take a full backup", hl, prevHdr)
	}
	stamp := recordStamp(hdr, size)
	// The header unless it is the same, then the changed blocks, adjacent
	// ones in one range.
	var ranges []Range
	if _, _, hash, _ := parseRecordStamp(stamp); hash != prevHash {
		ranges = append(ranges, Range{0, hl})
	} else {
		hdr = nil
	}
	for i := 0; i < len(ih.blocks); {
		j := i + 1
		for j < len(ih.blocks) && ih.blocks[j] == ih.blocks[j-1]+1 {
			j++
		}
		ranges = append(ranges, Range{Off: hl + int64(ih.blocks[i])*blockSize, Len: int64(j-i) * blockSize})
		i = j
	}
	// Blocks before the truncation length come from the previous file as
	// far as it reaches; past it, they are zeros unless sent (what
	// pg_combinebackup does).
	keep := hl + min(int64(ih.truncation)*blockSize, prevSize)
	if err := pm.MarkPatch(key, stamp, hl+size, key, keep, ranges); err != nil {
		return 0, err
	}
	if _, err := w.Write(hdr); err != nil {
		return 0, err
	}
	if _, err := io.CopyN(w, r, int64(len(ih.blocks))*blockSize); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.patched++
	s.mu.Unlock()
	return size, nil
}

// fullBackupLabel drops the lines of an incremental backup's backup_label
// that make the server refuse to start from it, as pg_combinebackup does.
func fullBackupLabel(label []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(label, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("INCREMENTAL FROM LSN: ")) || bytes.HasPrefix(line, []byte("INCREMENTAL FROM TLI: ")) {
			continue
		}
		out = append(out, line...)
	}
	return out
}

var manifestFileLine = regexp.MustCompile(`^\{ "Path": ("(?:[^"\\]|\\.)*"), "Size": [0-9]+, ("Last-Modified": "[^"]*")(?:, "Checksum-Algorithm": "[^"]*", "Checksum": "[^"]*")? \}(,?)$`)

// rewriteManifest makes an incremental backup's backup_manifest describe
// the whole files stored: each INCREMENTAL.<name> becomes <name> with its
// whole size and no checksum, backup_label gets its new size, and the
// manifest's own checksum is computed again.
func (s *recordSink) rewriteManifest(b []byte) ([]byte, error) {
	s.mu.Lock()
	resized := s.resized
	s.mu.Unlock()
	lines := bytes.SplitAfter(b, []byte("\n"))
	var out bytes.Buffer
	done := 0
	for _, line := range lines {
		body := bytes.TrimSuffix(line, []byte("\n"))
		m := manifestFileLine.FindSubmatch(body)
		if m != nil {
			var p string
			if err := json.Unmarshal(m[1], &p); err != nil {
				return nil, fmt.Errorf("backup_manifest: path %s: %w", m[1], err)
			}
			dir, base := path.Split(p)
			whole := dir + strings.TrimPrefix(base, incrementalPrefix)
			if size, ok := resized[whole]; ok {
				q, _ := json.Marshal(whole)
				fmt.Fprintf(&out, "{ \"Path\": %s, \"Size\": %d, %s }%s\n", q, size, m[2], m[3])
				done++
				continue
			}
		}
		if bytes.HasPrefix(body, []byte(`"Manifest-Checksum": "`)) {
			sum := sha256.Sum256(out.Bytes())
			fmt.Fprintf(&out, "\"Manifest-Checksum\": \"%s\"}\n", hex.EncodeToString(sum[:]))
			continue
		}
		out.Write(line)
	}
	if done != len(resized) {
		return nil, fmt.Errorf("backup_manifest lists %d of the %d files rewritten; its format is not the one expected", done, len(resized))
	}
	return out.Bytes(), nil
}

// uploadManifest sends the previous backup's manifest with UPLOAD_MANIFEST,
// for the BASE_BACKUP INCREMENTAL that follows on the same connection.
func uploadManifest(ctx context.Context, conn *pgconn.PgConn, manifest []byte) error {
	fe := conn.Frontend()
	fe.SendQuery(&pgproto3.Query{String: "UPLOAD_MANIFEST"})
	if err := fe.Flush(); err != nil {
		return err
	}
	var failed error
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyInResponse:
			for b := manifest; len(b) > 0; {
				n := min(len(b), 1<<20)
				fe.Send(&pgproto3.CopyData{Data: b[:n]})
				b = b[n:]
				if err := fe.Flush(); err != nil {
					return err
				}
			}
			fe.Send(&pgproto3.CopyDone{})
			if err := fe.Flush(); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			failed = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			return failed
		}
	}
}

// incrementalRefused says why the server cannot take an incremental
// backup against opts.Incremental, or "" when it may.
func incrementalRefused(ctx context.Context, sql *pgx.Conn, info *Info, opts BackupOptions) string {
	inc := opts.Incremental
	switch {
	case opts.Records == nil:
		return "the backup takes no file records to patch"
	case info.Major < 17:
		return fmt.Sprintf("PostgreSQL %d has no incremental backups (17 and newer have)", info.Major)
	case inc.SystemID != info.SystemID:
		return fmt.Sprintf("the previous backup is of database system %s, the server is %s", inc.SystemID, info.SystemID)
	case len(inc.Manifest) == 0:
		return "the previous backup has no backup_manifest"
	case len(inc.Records) == 0:
		return "the previous backup has no file records of a BASE_BACKUP"
	}
	var on string
	if err := sql.QueryRow(ctx, "SHOW summarize_wal").Scan(&on); err != nil {
		return "cannot read summarize_wal: " + err.Error()
	}
	if on != "on" {
		return "summarize_wal is off; set summarize_wal=on (no restart needed) for incremental backups"
	}
	return ""
}
