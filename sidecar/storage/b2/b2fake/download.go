package b2fake

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// rangeResult says how a Range header applies to an object.
type rangeResult int

const (
	rangeWhole         rangeResult = iota // no usable range: send the whole object with 200
	rangePartial                          // send [start, end] with 206
	rangeUnsatisfiable                    // 416 range_not_satisfiable
)

// parseRange interprets a Range header against an object of size bytes the
// way B2 documents it: "bytes=a-b", "bytes=a-" and "bytes=-n" select bytes;
// a range that starts beyond the object is unsatisfiable; a malformed range,
// several ranges, or one that encloses the whole object give the whole object.
// end is inclusive.
func parseRange(h string, size int64) (start, end int64, res rangeResult) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, size - 1, rangeWhole
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size - 1, rangeWhole
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size - 1, rangeWhole
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 19 {
			return 0, false
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	switch {
	case first == "": // suffix: the last n bytes
		n, ok := num(last)
		if !ok {
			return 0, size - 1, rangeWhole
		}
		if n == 0 || size == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		if n >= size {
			return 0, size - 1, rangeWhole
		}
		start, end = size-n, size-1
	default:
		a, ok := num(first)
		if !ok {
			return 0, size - 1, rangeWhole
		}
		b := size - 1
		if last != "" {
			if b, ok = num(last); !ok || b < a {
				return 0, size - 1, rangeWhole
			}
		}
		if a >= size {
			return 0, 0, rangeUnsatisfiable
		}
		if b > size-1 {
			b = size - 1
		}
		start, end = a, b
	}
	if start == 0 && end == size-1 {
		return start, end, rangeWhole
	}
	return start, end, rangePartial
}

// download serves b2_download_file_by_name: GET or HEAD /file/<bucket>/<name>.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeErr(w, errf(http.StatusMethodNotAllowed, "method_not_allowed", "downloads take GET or HEAD"))
		return
	}
	if e := s.checkAuth(r); e != nil {
		writeErr(w, e)
		return
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/file/")
	bucketEsc, nameEsc, ok := strings.Cut(rest, "/")
	bucketName, err1 := url.PathUnescape(bucketEsc)
	// File names in the path are percent-encoded, with '+' standing for a
	// space as in B2's string encoding.
	name, err2 := url.QueryUnescape(nameEsc)
	if !ok || err1 != nil || err2 != nil || name == "" {
		writeErr(w, errf(http.StatusBadRequest, "bad_request", "bad download path %q", r.URL.EscapedPath()))
		return
	}
	s.mu.Lock()
	b := s.buckets[bucketName]
	var v *version
	if b != nil {
		for _, cand := range sortedVersions(b, name) {
			if cand.name == name && cand.action != "start" {
				v = cand
				break
			}
		}
	}
	s.mu.Unlock()
	if b == nil {
		writeErr(w, errf(http.StatusNotFound, "not_found", "bucket %s does not exist", bucketName))
		return
	}
	if v == nil || v.action == "hide" {
		writeErr(w, errf(http.StatusNotFound, "not_found", "File with such name does not exist: %s", name))
		return
	}
	size := int64(len(v.data))
	start, end, res := parseRange(r.Header.Get("Range"), size)
	if res == rangeUnsatisfiable {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		writeErr(w, errf(http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable",
			"The range %s is outside the size of the file content (%d bytes)", r.Header.Get("Range"), size))
		return
	}
	h := w.Header()
	h.Set("Content-Type", v.contentType)
	h.Set("X-Bz-File-Id", v.id)
	h.Set("X-Bz-File-Name", escapeName(v.name))
	h.Set("X-Bz-Content-Sha1", v.sha1)
	h.Set("X-Bz-Upload-Timestamp", strconv.FormatInt(v.stamp, 10))
	h.Set("Accept-Ranges", "bytes")
	for k, val := range v.info {
		if k != "x-fake-parts" {
			h.Set("X-Bz-Info-"+k, escapeName(val))
		}
	}
	if ret := v.retention; ret != nil {
		h.Set("X-Bz-File-Retention-Mode", ret.Mode)
		h.Set("X-Bz-File-Retention-Retain-Until-Timestamp", strconv.FormatInt(ret.Until, 10))
	}
	h.Set("X-Bz-File-Legal-Hold", "off")
	status := http.StatusOK
	body := v.data
	if res == rangePartial {
		status = http.StatusPartialContent
		body = v.data[start : end+1]
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10)+"/"+strconv.FormatInt(size, 10))
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Date", s.now().UTC().Format(time.RFC1123))
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// escapeName percent-encodes a file name or info value for a header, keeping
// '/' as B2 does.
func escapeName(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/")
}
