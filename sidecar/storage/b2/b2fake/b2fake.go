package b2fake

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Default credentials accepted by a server made without WithKey.
const (
	DefaultKeyID = "000fakekeyid0000000000001"
	DefaultKey   = "K000fakeApplicationKeyForTests"
)

// DefaultMinPartSize is B2's absoluteMinimumPartSize: every part of a large
// file but the last must be at least this big.
const DefaultMinPartSize = 5_000_000

// Option configures a Server.
type Option func(*Server)

// WithKey sets the application key pair the server accepts.
func WithKey(keyID, key string) Option {
	return func(s *Server) { s.keyID, s.key = keyID, key }
}

// WithMinPartSize lowers (or raises) the minimum size of all parts but the
// last. B2 itself uses 5 MB; lower it only to keep a test's data small.
func WithMinPartSize(n int64) Option {
	return func(s *Server) { s.minPartSize = n }
}

// WithClock makes the server read time (upload timestamps, retention checks)
// from now instead of the wall clock.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// Fault describes how the server answers a call it was told to fail.
type Fault struct {
	// Method limits the fault to one B2 call, by its API name
	// ("b2_upload_file", "b2_download_file_by_name", ...). Empty matches any.
	Method string
	// Status is the HTTP status of the error answer: 503, 500, 429, ...
	Status int
	// RetryAfter, when positive, is sent as a Retry-After header in whole
	// seconds (rounded up).
	RetryAfter time.Duration
	// Drop closes the connection without any answer instead.
	Drop bool
}

type pendingFault struct {
	f Fault
	n int
}

// Server is an in-memory B2 API server listening on loopback.
type Server struct {
	hs *httptest.Server

	keyID, key  string
	accountID   string
	minPartSize int64
	now         func() time.Time

	mu           sync.Mutex
	seq          int64
	lastStamp    int64
	buckets      map[string]*bucket // by name
	bucketsByID  map[string]*bucket
	tokens       map[string]bool   // account auth token -> expired
	uploadTokens map[string]string // upload auth token -> bucket ID or large file ID
	versions     map[string]*version
	calls        map[string]int
	faults       []*pendingFault
}

type bucket struct {
	id, name string
	lock     bool
	revision int
	files    []*version
}

type retention struct {
	Mode  string
	Until int64 // milliseconds since the epoch
}

type part struct {
	data []byte
	sha1 string
}

type version struct {
	seq         int64
	id          string
	name        string
	action      string // "upload", "hide" or "start" (unfinished large file)
	bucket      *bucket
	data        []byte
	sha1        string // hex, or "none" for large files
	contentType string
	info        map[string]string
	stamp       int64
	retention   *retention
	parts       map[int]*part // while action == "start"
}

// Version describes one stored file version, for tests that inspect the
// server's state.
type Version struct {
	ID          string
	Name        string
	Action      string // "upload", "hide" or "start"
	Size        int64
	SHA1        string
	ContentType string
	Info        map[string]string
	Uploaded    time.Time
	// RetentionMode is "", "governance" or "compliance".
	RetentionMode  string
	RetainUntil    time.Time
	LargeFileParts int // number of parts a large file was assembled from; 0 for a small upload
}

// New starts a server on a loopback port. Close it when done.
func New(opts ...Option) *Server {
	s := &Server{
		keyID:        DefaultKeyID,
		key:          DefaultKey,
		accountID:    "fakeacct0001",
		minPartSize:  DefaultMinPartSize,
		now:          time.Now,
		buckets:      map[string]*bucket{},
		bucketsByID:  map[string]*bucket{},
		tokens:       map[string]bool{},
		uploadTokens: map[string]string{},
		versions:     map[string]*version{},
		calls:        map[string]int{},
	}
	for _, o := range opts {
		o(s)
	}
	s.hs = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the API base to give a client (blazer's APIBase option).
func (s *Server) URL() string { return s.hs.URL }

// KeyID returns the application key ID the server accepts.
func (s *Server) KeyID() string { return s.keyID }

// Key returns the application key the server accepts.
func (s *Server) Key() string { return s.key }

// Close shuts the server down.
func (s *Server) Close() { s.hs.Close() }

// CreateBucket adds an empty private bucket and returns its ID. With
// objectLock, uploads may carry Object Lock retention.
func (s *Server) CreateBucket(name string, objectLock bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[name]; ok {
		return b.id
	}
	b := &bucket{id: fmt.Sprintf("fb%022x", len(s.buckets)+1), name: name, lock: objectLock, revision: 1}
	s.buckets[name] = b
	s.bucketsByID[b.id] = b
	return b.id
}

// Calls returns how many requests for the named B2 call the server received,
// faulted ones included.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// FailNext makes the next n calls that match f.Method fail as f says.
func (s *Server) FailNext(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &pendingFault{f: f, n: n})
}

// ExpireTokens expires every account authorisation token issued so far, so
// the next API call gets 401 expired_auth_token.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.tokens {
		s.tokens[t] = true
	}
}

// Versions lists every version in the bucket whose name starts with prefix,
// unfinished large files and hide markers included, by name and newest first.
func (s *Server) Versions(bucketName, prefix string) []Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucketName]
	if b == nil {
		return nil
	}
	var out []Version
	for _, v := range sortedVersions(b, prefix) {
		pv := Version{
			ID: v.id, Name: v.name, Action: v.action, Size: int64(len(v.data)), SHA1: v.sha1,
			ContentType: v.contentType, Info: copyMap(v.info), Uploaded: time.UnixMilli(v.stamp),
		}
		if v.retention != nil {
			pv.RetentionMode = v.retention.Mode
			pv.RetainUntil = time.UnixMilli(v.retention.Until)
		}
		if n, err := strconv.Atoi(v.info["x-fake-parts"]); err == nil {
			pv.LargeFileParts = n
			delete(pv.Info, "x-fake-parts")
		}
		out = append(out, pv)
	}
	return out
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sortedVersions returns the bucket's versions under prefix by name, then
// newest first. The caller holds s.mu.
func sortedVersions(b *bucket, prefix string) []*version {
	var vs []*version
	for _, v := range b.files {
		if strings.HasPrefix(v.name, prefix) {
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].name != vs[j].name {
			return vs[i].name < vs[j].name
		}
		return vs[i].seq > vs[j].seq
	})
	return vs
}

// apiError is B2's JSON error body.
type apiError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		buf, _ = json.Marshal(errf(status, "internal_error", "encode reply: %v", err))
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "max-age=0, no-cache, no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(status)
	w.Write(buf)
}

func writeErr(w http.ResponseWriter, e *apiError) { writeJSON(w, e.Status, e) }

var apiPath = regexp.MustCompile(`^/b2api/v([1-4])/(b2_[a-z_]+)(/.*)?$`)

// callName names the B2 call a request makes, for counting and faults.
func callName(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, "/file/") {
		return "b2_download_file_by_name"
	}
	if m := apiPath.FindStringSubmatch(r.URL.Path); m != nil {
		return m[2]
	}
	return ""
}

func (s *Server) takeFault(method string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	for i, pf := range s.faults {
		if pf.f.Method != "" && pf.f.Method != method {
			continue
		}
		pf.n--
		if pf.n <= 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return pf.f, true
	}
	return Fault{}, false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	method := callName(r)
	if f, ok := s.takeFault(method); ok {
		s.fail(w, r, f)
		return
	}
	if method == "b2_download_file_by_name" {
		s.download(w, r)
		return
	}
	m := apiPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		writeErr(w, errf(http.StatusNotFound, "not_found", "no such API: %s", r.URL.Path))
		return
	}
	var e *apiError
	switch method {
	case "b2_authorize_account":
		e = s.authorize(w, r, m[1])
	case "b2_upload_file":
		e = s.uploadFile(w, r, m[3])
	case "b2_upload_part":
		e = s.uploadPart(w, r, m[3])
	default:
		h, ok := jsonCalls[method]
		if !ok {
			e = errf(http.StatusBadRequest, "bad_request", "unsupported API call %s", method)
			break
		}
		if e = s.checkAuth(r); e != nil {
			break
		}
		body, err := readParams(r)
		if err != nil {
			e = errf(http.StatusBadRequest, "bad_request", "%v", err)
			break
		}
		var reply any
		reply, e = h(s, body, r)
		if e == nil {
			writeJSON(w, http.StatusOK, reply)
		}
	}
	if e != nil {
		writeErr(w, e)
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, f Fault) {
	if f.Drop {
		hj, ok := w.(http.Hijacker)
		if ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		f.Status = http.StatusServiceUnavailable
	}
	if f.RetryAfter > 0 {
		secs := int64((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	code := map[int]string{
		http.StatusServiceUnavailable:  "service_unavailable",
		http.StatusInternalServerError: "internal_error",
		http.StatusTooManyRequests:     "too_many_requests",
		http.StatusRequestTimeout:      "request_timeout",
	}[f.Status]
	if code == "" {
		code = "fault"
	}
	io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
	writeErr(w, errf(f.Status, code, "injected fault"))
}

// readParams decodes a JSON request body, or the query parameters of a GET
// (B2 accepts both forms).
func readParams(r *http.Request) (map[string]json.RawMessage, error) {
	params := map[string]json.RawMessage{}
	if r.Method == http.MethodGet {
		for k, v := range r.URL.Query() {
			if len(v) == 0 {
				continue
			}
			if strings.HasPrefix(v[0], "[") || strings.HasPrefix(v[0], "{") || v[0] == "true" || v[0] == "false" || isNumber(v[0]) {
				params[k] = json.RawMessage(v[0])
			} else {
				enc, _ := json.Marshal(v[0])
				params[k] = enc
			}
		}
		return params, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read request body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return params, nil
	}
	if err := json.Unmarshal(body, &params); err != nil {
		return nil, fmt.Errorf("request body is not a JSON object: %v", err)
	}
	return params, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// stamp returns a strictly increasing millisecond timestamp. The caller
// holds s.mu.
func (s *Server) stamp() int64 {
	t := s.now().UnixMilli()
	if t <= s.lastStamp {
		t = s.lastStamp + 1
	}
	s.lastStamp = t
	return t
}

func (s *Server) newVersion(b *bucket, name, action string) *version {
	s.seq++
	v := &version{
		seq:    s.seq,
		id:     fmt.Sprintf("4_z%s_f%016x_d%s_c000_v0001000_t0001", b.id, s.seq, time.UnixMilli(s.now().UnixMilli()).UTC().Format("20060102_m150405")),
		name:   name,
		action: action,
		bucket: b,
		info:   map[string]string{},
		stamp:  s.stamp(),
	}
	s.versions[v.id] = v
	return v
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request, apiVersion string) *apiError {
	const prefix = "Basic "
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, prefix) {
		return errf(http.StatusUnauthorized, "bad_auth_token", "missing Basic authorization")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, prefix))
	if err != nil {
		return errf(http.StatusBadRequest, "bad_request", "malformed Basic authorization")
	}
	id, key, _ := strings.Cut(string(raw), ":")
	if id != s.keyID || key != s.key {
		return errf(http.StatusUnauthorized, "bad_auth_token", "The applicationKeyId and/or the applicationKey are wrong.")
	}
	tok := "4_" + newToken()
	s.mu.Lock()
	s.tokens[tok] = false
	s.mu.Unlock()
	caps := []string{"listBuckets", "listAllBucketNames", "readBuckets", "writeBuckets", "listFiles", "readFiles",
		"shareFiles", "writeFiles", "deleteFiles", "readBucketRetentions", "writeBucketRetentions",
		"readFileRetentions", "writeFileRetentions", "readFileLegalHolds", "writeFileLegalHolds", "bypassGovernance"}
	base := s.hs.URL
	if apiVersion == "1" || apiVersion == "2" {
		writeJSON(w, http.StatusOK, map[string]any{
			"accountId":               s.accountID,
			"authorizationToken":      tok,
			"apiUrl":                  base,
			"downloadUrl":             base,
			"s3ApiUrl":                base,
			"recommendedPartSize":     100_000_000,
			"absoluteMinimumPartSize": s.minPartSize,
			"allowed":                 map[string]any{"capabilities": caps, "bucketId": nil, "bucketName": nil, "namePrefix": nil},
		})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"accountId":                         s.accountID,
		"authorizationToken":                tok,
		"applicationKeyExpirationTimestamp": nil,
		"apiInfo": map[string]any{
			"storageApi": map[string]any{
				"infoType":                "storageApi",
				"apiUrl":                  base,
				"downloadUrl":             base,
				"s3ApiUrl":                base,
				"recommendedPartSize":     100_000_000,
				"absoluteMinimumPartSize": s.minPartSize,
				"capabilities":            caps,
				"bucketId":                nil,
				"bucketName":              nil,
				"namePrefix":              nil,
			},
		},
	})
	return nil
}

// checkAuth checks an account authorisation token.
func (s *Server) checkAuth(r *http.Request) *apiError {
	tok := r.Header.Get("Authorization")
	if tok == "" {
		return errf(http.StatusUnauthorized, "bad_auth_token", "Authorization token is missing")
	}
	s.mu.Lock()
	expired, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok {
		return errf(http.StatusUnauthorized, "bad_auth_token", "Invalid authorization token")
	}
	if expired {
		return errf(http.StatusUnauthorized, "expired_auth_token", "Authorization token has expired")
	}
	return nil
}

type jsonCall func(s *Server, p map[string]json.RawMessage, r *http.Request) (any, *apiError)

var jsonCalls map[string]jsonCall

func init() {
	jsonCalls = map[string]jsonCall{
		"b2_list_buckets":          (*Server).listBuckets,
		"b2_get_upload_url":        (*Server).getUploadURL,
		"b2_start_large_file":      (*Server).startLargeFile,
		"b2_get_upload_part_url":   (*Server).getUploadPartURL,
		"b2_finish_large_file":     (*Server).finishLargeFile,
		"b2_cancel_large_file":     (*Server).cancelLargeFile,
		"b2_list_file_names":       (*Server).listFileNames,
		"b2_list_file_versions":    (*Server).listFileVersions,
		"b2_hide_file":             (*Server).hideFile,
		"b2_delete_file_version":   (*Server).deleteFileVersion,
		"b2_get_file_info":         (*Server).getFileInfo,
		"b2_list_parts":            (*Server).listParts,
		"b2_update_file_retention": (*Server).updateFileRetention,
	}
}

// param decodes one field; required fields that are missing give 400.
func param[T any](p map[string]json.RawMessage, name string, required bool) (T, *apiError) {
	var v T
	raw, ok := p[name]
	if !ok || string(raw) == "null" {
		if required {
			return v, errf(http.StatusBadRequest, "bad_request", "required field %s is missing", name)
		}
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, errf(http.StatusBadRequest, "bad_request", "invalid value for %s: %v", name, err)
	}
	return v, nil
}

func (s *Server) bucketByID(id string) (*bucket, *apiError) {
	b := s.bucketsByID[id]
	if b == nil {
		return nil, errf(http.StatusBadRequest, "bad_bucket_id", "Bucket %s does not exist", id)
	}
	return b, nil
}

func (s *Server) bucketJSON(b *bucket) map[string]any {
	return map[string]any{
		"accountId":      s.accountID,
		"bucketId":       b.id,
		"bucketName":     b.name,
		"bucketType":     "allPrivate",
		"bucketInfo":     map[string]string{},
		"corsRules":      []any{},
		"lifecycleRules": []any{},
		"revision":       b.revision,
		"options":        []string{},
		"fileLockConfiguration": map[string]any{
			"isClientAuthorizedToRead": true,
			"value": map[string]any{
				"isFileLockEnabled": b.lock,
				"defaultRetention":  map[string]any{"mode": nil, "period": nil},
			},
		},
		"defaultServerSideEncryption": map[string]any{"isClientAuthorizedToRead": true, "value": map[string]any{"mode": nil}},
	}
}

func (s *Server) listBuckets(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	acct, e := param[string](p, "accountId", true)
	if e != nil {
		return nil, e
	}
	if acct != s.accountID {
		return nil, errf(http.StatusUnauthorized, "unauthorized", "accountId %s does not match the authorized account", acct)
	}
	id, e := param[string](p, "bucketId", false)
	if e != nil {
		return nil, e
	}
	name, e := param[string](p, "bucketName", false)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	names := make([]string, 0, len(s.buckets))
	for n := range s.buckets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := s.buckets[n]
		if (id != "" && b.id != id) || (name != "" && b.name != name) {
			continue
		}
		out = append(out, s.bucketJSON(b))
	}
	return map[string]any{"buckets": out}, nil
}

func (s *Server) getUploadURL(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "bucketId", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, e := s.bucketByID(id); e != nil {
		return nil, e
	}
	tok := "4_u" + newToken()
	s.uploadTokens[tok] = id
	return map[string]any{
		"bucketId":           id,
		"uploadUrl":          s.hs.URL + "/b2api/v3/b2_upload_file/" + id + "/" + newToken()[:8],
		"authorizationToken": tok,
	}, nil
}

// checkUploadToken checks an upload token against the bucket or large file
// that the upload URL names.
func (s *Server) checkUploadToken(r *http.Request, target string) *apiError {
	tok := r.Header.Get("Authorization")
	s.mu.Lock()
	got, ok := s.uploadTokens[tok]
	s.mu.Unlock()
	if !ok || got != target {
		return errf(http.StatusUnauthorized, "bad_auth_token", "Invalid upload authorization token")
	}
	return nil
}

// readUpload reads an upload body of exactly Content-Length bytes and checks
// its SHA1 as B2 does: a 40-digit hex value, "do_not_verify", or
// "hex_digits_at_end" (the SHA1 follows the data as its last 40 bytes).
func readUpload(r *http.Request) (data []byte, sum string, e *apiError) {
	if r.ContentLength < 0 || r.Header.Get("Content-Length") == "" {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "Content-Length is required; chunked uploads are not supported")
	}
	claim := r.Header.Get("X-Bz-Content-Sha1")
	if claim == "" {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "X-Bz-Content-Sha1 is required")
	}
	n := r.ContentLength
	if claim == "hex_digits_at_end" && n < 40 {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "Content-Length too small for a trailing SHA1")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "body shorter than Content-Length %d: %v", n, err)
	}
	switch {
	case claim == "hex_digits_at_end":
		claim = strings.ToLower(string(body[n-40:]))
		body = body[:n-40]
	case claim == "do_not_verify" || strings.HasPrefix(claim, "unverified:"):
		// Accepted unchecked; B2 stores the SHA1 of what it received.
		h := sha1.Sum(body)
		return body, hex.EncodeToString(h[:]), nil
	}
	claim = strings.ToLower(claim)
	if !isSHA1(claim) {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "X-Bz-Content-Sha1 is not a 40-digit hex SHA1: %q", claim)
	}
	h := sha1.Sum(body)
	if got := hex.EncodeToString(h[:]); got != claim {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "Sha1 did not match data received")
	}
	return body, claim, nil
}

func isSHA1(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// parseRetention checks Object Lock settings given on upload.
func (s *Server) parseRetention(b *bucket, mode string, until int64, untilGiven bool) (*retention, *apiError) {
	if mode == "" && !untilGiven {
		return nil, nil
	}
	if !b.lock {
		return nil, errf(http.StatusBadRequest, "bad_request", "file lock is not enabled on bucket %s; retention cannot be set", b.name)
	}
	if mode != "governance" && mode != "compliance" {
		return nil, errf(http.StatusBadRequest, "bad_request", "invalid file retention mode %q", mode)
	}
	if !untilGiven {
		return nil, errf(http.StatusBadRequest, "bad_request", "retainUntilTimestamp is required with retention mode %s", mode)
	}
	if until <= s.now().UnixMilli() {
		return nil, errf(http.StatusBadRequest, "bad_request", "retainUntilTimestamp must be in the future")
	}
	return &retention{Mode: mode, Until: until}, nil
}

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, rest string) *apiError {
	if r.Method != http.MethodPost {
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "b2_upload_file takes POST")
	}
	bucketID, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	if e := s.checkUploadToken(r, bucketID); e != nil {
		return e
	}
	name, err := url.QueryUnescape(r.Header.Get("X-Bz-File-Name"))
	if err != nil || name == "" {
		return errf(http.StatusBadRequest, "bad_request", "X-Bz-File-Name is missing or badly encoded")
	}
	if e := checkName(name); e != nil {
		return e
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return errf(http.StatusBadRequest, "bad_request", "Content-Type is required")
	}
	info, e := infoHeaders(r.Header)
	if e != nil {
		return e
	}
	mode := r.Header.Get("X-Bz-File-Retention-Mode")
	untilStr := r.Header.Get("X-Bz-File-Retention-Retain-Until-Timestamp")
	var until int64
	if untilStr != "" {
		if until, err = strconv.ParseInt(untilStr, 10, 64); err != nil {
			return errf(http.StatusBadRequest, "bad_request", "invalid X-Bz-File-Retention-Retain-Until-Timestamp %q", untilStr)
		}
	}
	data, sum, e := readUpload(r)
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, e := s.bucketByID(bucketID)
	if e != nil {
		return e
	}
	ret, e := s.parseRetention(b, mode, until, untilStr != "")
	if e != nil {
		return e
	}
	v := s.newVersion(b, name, "upload")
	v.data, v.sha1, v.contentType, v.info, v.retention = data, sum, ct, info, ret
	b.files = append(b.files, v)
	writeJSON(w, http.StatusOK, s.fileJSON(v))
	return nil
}

func checkName(name string) *apiError {
	if len(name) > 1024 {
		return errf(http.StatusBadRequest, "bad_request", "file name longer than 1024 bytes")
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return errf(http.StatusBadRequest, "bad_request", "invalid file name %q", name)
	}
	for _, c := range name {
		if c < 32 || c == 127 {
			return errf(http.StatusBadRequest, "bad_request", "file name contains a control character")
		}
	}
	return nil
}

func infoHeaders(h http.Header) (map[string]string, *apiError) {
	info := map[string]string{}
	for k, vs := range h {
		if !strings.HasPrefix(k, "X-Bz-Info-") || len(vs) == 0 {
			continue
		}
		val, err := url.QueryUnescape(vs[0])
		if err != nil {
			return nil, errf(http.StatusBadRequest, "bad_request", "badly encoded %s", k)
		}
		info[strings.ToLower(strings.TrimPrefix(k, "X-Bz-Info-"))] = val
	}
	if len(info) > 10 {
		return nil, errf(http.StatusBadRequest, "bad_request", "too many file info entries (max 10)")
	}
	return info, nil
}

func (s *Server) fileJSON(v *version) map[string]any {
	sum := v.sha1
	if v.action == "hide" || v.action == "start" {
		sum = "none"
		if v.action == "hide" {
			sum = ""
		}
	}
	info := map[string]string{}
	for k, val := range v.info {
		if k != "x-fake-parts" {
			info[k] = val
		}
	}
	var ret any = map[string]any{"mode": nil, "retainUntilTimestamp": nil}
	if v.retention != nil {
		ret = map[string]any{"mode": v.retention.Mode, "retainUntilTimestamp": v.retention.Until}
	}
	size := int64(len(v.data))
	if v.action != "upload" {
		size = 0
	}
	out := map[string]any{
		"accountId":            s.accountID,
		"action":               v.action,
		"bucketId":             v.bucket.id,
		"contentLength":        size,
		"contentSha1":          sum,
		"contentMd5":           nil,
		"contentType":          v.contentType,
		"fileId":               v.id,
		"fileInfo":             info,
		"fileName":             v.name,
		"fileRetention":        map[string]any{"isClientAuthorizedToRead": true, "value": ret},
		"legalHold":            map[string]any{"isClientAuthorizedToRead": true, "value": nil},
		"serverSideEncryption": map[string]any{"mode": nil},
		"uploadTimestamp":      v.stamp,
	}
	if v.action == "hide" {
		out["contentType"] = "application/x-bz-hide-marker"
	}
	return out
}

// retentionParam decodes {"mode": ..., "retainUntilTimestamp": ...}.
type retentionParam struct {
	Mode  *string `json:"mode"`
	Until *int64  `json:"retainUntilTimestamp"`
}

func (s *Server) startLargeFile(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	bucketID, e := param[string](p, "bucketId", true)
	if e != nil {
		return nil, e
	}
	name, e := param[string](p, "fileName", true)
	if e != nil {
		return nil, e
	}
	if e := checkName(name); e != nil {
		return nil, e
	}
	ct, e := param[string](p, "contentType", true)
	if e != nil {
		return nil, e
	}
	info, e := param[map[string]string](p, "fileInfo", false)
	if e != nil {
		return nil, e
	}
	if len(info) > 10 {
		return nil, errf(http.StatusBadRequest, "bad_request", "too many file info entries (max 10)")
	}
	if sum, ok := info["large_file_sha1"]; ok && !isSHA1(strings.ToLower(sum)) {
		return nil, errf(http.StatusBadRequest, "bad_request", "large_file_sha1 is not a 40-digit hex SHA1")
	}
	rp, e := param[retentionParam](p, "fileRetention", false)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, e := s.bucketByID(bucketID)
	if e != nil {
		return nil, e
	}
	var mode string
	var until int64
	if rp.Mode != nil {
		mode = *rp.Mode
	}
	if rp.Until != nil {
		until = *rp.Until
	}
	ret, e := s.parseRetention(b, mode, until, rp.Until != nil)
	if e != nil {
		return nil, e
	}
	v := s.newVersion(b, name, "start")
	v.contentType, v.retention, v.parts = ct, ret, map[int]*part{}
	for k, val := range info {
		v.info[strings.ToLower(k)] = val
	}
	b.files = append(b.files, v)
	return s.fileJSON(v), nil
}

func (s *Server) largeFile(id string) (*version, *apiError) {
	v := s.versions[id]
	if v == nil || v.action != "start" {
		return nil, errf(http.StatusBadRequest, "bad_request", "no active large file upload with id %s", id)
	}
	return v, nil
}

func (s *Server) getUploadPartURL(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, e := s.largeFile(id); e != nil {
		return nil, e
	}
	tok := "4_p" + newToken()
	s.uploadTokens[tok] = id
	return map[string]any{
		"fileId":             id,
		"uploadUrl":          s.hs.URL + "/b2api/v3/b2_upload_part/" + id + "/" + newToken()[:8],
		"authorizationToken": tok,
	}, nil
}

func (s *Server) uploadPart(w http.ResponseWriter, r *http.Request, rest string) *apiError {
	if r.Method != http.MethodPost {
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "b2_upload_part takes POST")
	}
	fileID, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	if e := s.checkUploadToken(r, fileID); e != nil {
		return e
	}
	num, err := strconv.Atoi(r.Header.Get("X-Bz-Part-Number"))
	if err != nil || num < 1 || num > 10000 {
		return errf(http.StatusBadRequest, "bad_request", "X-Bz-Part-Number must be a number from 1 to 10000")
	}
	if r.ContentLength > 5_000_000_000 {
		return errf(http.StatusBadRequest, "bad_request", "part larger than 5 GB")
	}
	data, sum, e := readUpload(r)
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, e := s.largeFile(fileID)
	if e != nil {
		return e
	}
	v.parts[num] = &part{data: data, sha1: sum}
	writeJSON(w, http.StatusOK, map[string]any{
		"fileId":          fileID,
		"partNumber":      num,
		"contentLength":   len(data),
		"contentSha1":     sum,
		"contentMd5":      nil,
		"uploadTimestamp": s.now().UnixMilli(),
	})
	return nil
}

func (s *Server) finishLargeFile(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	sums, e := param[[]string](p, "partSha1Array", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, e := s.largeFile(id)
	if e != nil {
		return nil, e
	}
	if len(sums) == 0 {
		return nil, errf(http.StatusBadRequest, "bad_request", "partSha1Array is empty")
	}
	if len(sums) != len(v.parts) {
		return nil, errf(http.StatusBadRequest, "bad_request", "partSha1Array has %d entries but %d parts were uploaded", len(sums), len(v.parts))
	}
	var total int
	for i, sum := range sums {
		pt := v.parts[i+1]
		if pt == nil {
			return nil, errf(http.StatusBadRequest, "bad_request", "Part number %d has not been uploaded", i+1)
		}
		if !strings.EqualFold(pt.sha1, sum) {
			return nil, errf(http.StatusBadRequest, "bad_request", "Sha1 for part %d does not match the uploaded part", i+1)
		}
		if i < len(sums)-1 && int64(len(pt.data)) < s.minPartSize {
			return nil, errf(http.StatusBadRequest, "bad_request", "Part number %d is smaller than the minimum part size %d", i+1, s.minPartSize)
		}
		total += len(pt.data)
	}
	data := make([]byte, 0, total)
	for i := range sums {
		data = append(data, v.parts[i+1].data...)
	}
	if want, ok := v.info["large_file_sha1"]; ok {
		h := sha1.Sum(data)
		if !strings.EqualFold(want, hex.EncodeToString(h[:])) {
			return nil, errf(http.StatusBadRequest, "bad_request", "large_file_sha1 does not match the assembled parts")
		}
	}
	v.data, v.sha1, v.action, v.parts = data, "none", "upload", nil
	v.info["x-fake-parts"] = strconv.Itoa(len(sums))
	// The version becomes visible now, ordered by when it was finished.
	s.seq++
	v.seq = s.seq
	v.stamp = s.stamp()
	for tok, target := range s.uploadTokens {
		if target == id {
			delete(s.uploadTokens, tok)
		}
	}
	return s.fileJSON(v), nil
}

func (s *Server) removeVersion(v *version) {
	b := v.bucket
	for i, f := range b.files {
		if f == v {
			b.files = append(b.files[:i], b.files[i+1:]...)
			break
		}
	}
	delete(s.versions, v.id)
	for tok, target := range s.uploadTokens {
		if target == v.id {
			delete(s.uploadTokens, tok)
		}
	}
}

func (s *Server) cancelLargeFile(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, e := s.largeFile(id)
	if e != nil {
		return nil, e
	}
	s.removeVersion(v)
	return map[string]any{"fileId": v.id, "accountId": s.accountID, "bucketId": v.bucket.id, "fileName": v.name}, nil
}

func (s *Server) listParts(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	start, e := param[int](p, "startPartNumber", false)
	if e != nil {
		return nil, e
	}
	max, e := param[int](p, "maxPartCount", false)
	if e != nil {
		return nil, e
	}
	if max <= 0 {
		max = 100
	}
	if start < 1 {
		start = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, e := s.largeFile(id)
	if e != nil {
		return nil, e
	}
	var nums []int
	for n := range v.parts {
		if n >= start {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	var next any
	if len(nums) > max {
		next = nums[max]
		nums = nums[:max]
	}
	parts := []map[string]any{}
	for _, n := range nums {
		parts = append(parts, map[string]any{"fileId": id, "partNumber": n, "contentLength": len(v.parts[n].data), "contentSha1": v.parts[n].sha1})
	}
	return map[string]any{"parts": parts, "nextPartNumber": next}, nil
}

type listParams struct {
	bucket    *bucket
	start     string
	startID   string
	max       int
	prefix    string
	delimiter string
}

func (s *Server) parseList(p map[string]json.RawMessage) (listParams, *apiError) {
	var lp listParams
	id, e := param[string](p, "bucketId", true)
	if e != nil {
		return lp, e
	}
	if lp.start, e = param[string](p, "startFileName", false); e != nil {
		return lp, e
	}
	if lp.startID, e = param[string](p, "startFileId", false); e != nil {
		return lp, e
	}
	if lp.max, e = param[int](p, "maxFileCount", false); e != nil {
		return lp, e
	}
	if lp.prefix, e = param[string](p, "prefix", false); e != nil {
		return lp, e
	}
	if lp.delimiter, e = param[string](p, "delimiter", false); e != nil {
		return lp, e
	}
	if lp.max == 0 {
		lp.max = 100
	}
	if lp.max < 0 || lp.max > 10000 {
		return lp, errf(http.StatusBadRequest, "bad_request", "maxFileCount must be between 1 and 10000")
	}
	if lp.startID != "" && lp.start == "" {
		return lp, errf(http.StatusBadRequest, "bad_request", "startFileId requires startFileName")
	}
	if lp.bucket, e = s.bucketByID(id); e != nil {
		return lp, e
	}
	return lp, nil
}

// folderOf returns the virtual folder name holds under prefix with the
// delimiter, or "" when name is a plain entry.
func folderOf(name, prefix, delimiter string) string {
	if delimiter == "" {
		return ""
	}
	i := strings.Index(name[len(prefix):], delimiter)
	if i < 0 {
		return ""
	}
	return name[:len(prefix)+i+len(delimiter)]
}

func (s *Server) listFileNames(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lp, e := s.parseList(p)
	if e != nil {
		return nil, e
	}
	files := []map[string]any{}
	var next any
	seen := map[string]bool{}
	for _, v := range sortedVersions(lp.bucket, lp.prefix) {
		if v.name < lp.start || v.action == "start" || seen[v.name] {
			continue
		}
		seen[v.name] = true // the newest finished version decides
		if v.action == "hide" {
			continue
		}
		entry := s.fileJSON(v)
		if f := folderOf(v.name, lp.prefix, lp.delimiter); f != "" {
			if seen["folder:"+f] || f < lp.start {
				continue
			}
			seen["folder:"+f] = true
			entry = map[string]any{"action": "folder", "fileName": f, "fileId": nil, "contentLength": 0, "uploadTimestamp": 0, "fileInfo": map[string]string{}}
		}
		if len(files) == lp.max {
			next = entry["fileName"]
			break
		}
		files = append(files, entry)
	}
	return map[string]any{"files": files, "nextFileName": next}, nil
}

func (s *Server) listFileVersions(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lp, e := s.parseList(p)
	if e != nil {
		return nil, e
	}
	files := []map[string]any{}
	var nextName, nextID any
	started := lp.startID == ""
	seenFolders := map[string]bool{}
	for _, v := range sortedVersions(lp.bucket, lp.prefix) {
		if v.name < lp.start {
			continue
		}
		if !started {
			if v.name > lp.start || v.id == lp.startID {
				started = true
			} else {
				continue
			}
		}
		entry := s.fileJSON(v)
		if f := folderOf(v.name, lp.prefix, lp.delimiter); f != "" {
			if seenFolders[f] {
				continue
			}
			seenFolders[f] = true
			entry = map[string]any{"action": "folder", "fileName": f, "fileId": nil, "contentLength": 0, "uploadTimestamp": 0, "fileInfo": map[string]string{}}
		}
		if len(files) == lp.max {
			nextName, nextID = entry["fileName"], entry["fileId"]
			break
		}
		files = append(files, entry)
	}
	return map[string]any{"files": files, "nextFileName": nextName, "nextFileId": nextID}, nil
}

func (s *Server) hideFile(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	bucketID, e := param[string](p, "bucketId", true)
	if e != nil {
		return nil, e
	}
	name, e := param[string](p, "fileName", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, e := s.bucketByID(bucketID)
	if e != nil {
		return nil, e
	}
	var latest *version
	for _, v := range sortedVersions(b, name) {
		if v.name == name && v.action != "start" {
			latest = v
			break
		}
	}
	if latest == nil {
		return nil, errf(http.StatusBadRequest, "no_such_file", "File not present: %s", name)
	}
	if latest.action == "hide" {
		return nil, errf(http.StatusBadRequest, "already_hidden", "File already hidden: %s", name)
	}
	v := s.newVersion(b, name, "hide")
	b.files = append(b.files, v)
	return s.fileJSON(v), nil
}

func (s *Server) deleteFileVersion(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	name, e := param[string](p, "fileName", true)
	if e != nil {
		return nil, e
	}
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	bypass, e := param[bool](p, "bypassGovernance", false)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.versions[id]
	if v == nil || v.name != name {
		return nil, errf(http.StatusBadRequest, "file_not_present", "File not present: %s %s", name, id)
	}
	if r := v.retention; r != nil && s.now().UnixMilli() < r.Until {
		until := time.UnixMilli(r.Until).UTC().Format(time.RFC3339)
		if r.Mode == "compliance" {
			return nil, errf(http.StatusUnauthorized, "access_denied", "file version %s is protected by compliance mode retention until %s", id, until)
		}
		if !bypass {
			return nil, errf(http.StatusUnauthorized, "access_denied", "file version %s is protected by governance mode retention until %s; bypassGovernance is required", id, until)
		}
	}
	s.removeVersion(v)
	return map[string]any{"fileId": id, "fileName": name}, nil
}

func (s *Server) getFileInfo(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.versions[id]
	if v == nil {
		return nil, errf(http.StatusNotFound, "not_found", "File not present: %s", id)
	}
	return s.fileJSON(v), nil
}

func (s *Server) updateFileRetention(p map[string]json.RawMessage, _ *http.Request) (any, *apiError) {
	name, e := param[string](p, "fileName", true)
	if e != nil {
		return nil, e
	}
	id, e := param[string](p, "fileId", true)
	if e != nil {
		return nil, e
	}
	rp, e := param[retentionParam](p, "fileRetention", true)
	if e != nil {
		return nil, e
	}
	bypass, e := param[bool](p, "bypassGovernance", false)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.versions[id]
	if v == nil || v.name != name || v.action != "upload" {
		return nil, errf(http.StatusBadRequest, "file_not_present", "File not present: %s %s", name, id)
	}
	var nr *retention
	if rp.Mode != nil {
		until := int64(0)
		if rp.Until != nil {
			until = *rp.Until
		}
		if nr, e = s.parseRetention(v.bucket, *rp.Mode, until, rp.Until != nil); e != nil {
			return nil, e
		}
	} else if !v.bucket.lock {
		return nil, errf(http.StatusBadRequest, "bad_request", "file lock is not enabled on bucket %s", v.bucket.name)
	}
	if old := v.retention; old != nil && s.now().UnixMilli() < old.Until {
		weaker := nr == nil || nr.Until < old.Until || (old.Mode == "compliance" && nr.Mode != "compliance")
		if weaker && (old.Mode == "compliance" || !bypass) {
			return nil, errf(http.StatusUnauthorized, "access_denied", "retention of %s cannot be shortened or removed", id)
		}
	}
	v.retention = nr
	var val any = map[string]any{"mode": nil, "retainUntilTimestamp": nil}
	if nr != nil {
		val = map[string]any{"mode": nr.Mode, "retainUntilTimestamp": nr.Until}
	}
	return map[string]any{"fileId": id, "fileName": name, "fileRetention": val}, nil
}
