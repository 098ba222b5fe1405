package b2fake

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// client speaks the B2 native API to a fake with plain net/http, so these
// tests check the protocol as Backblaze documents it, not as one client uses it.
type client struct {
	t        *testing.T
	srv      *Server
	token    string
	apiURL   string
	dlURL    string
	bucketID string
}

func newClient(t *testing.T, lock bool, opts ...Option) *client {
	t.Helper()
	srv := New(opts...)
	t.Cleanup(srv.Close)
	c := &client{t: t, srv: srv}
	c.bucketID = srv.CreateBucket("bkt", lock)
	var auth struct {
		Token   string `json:"authorizationToken"`
		APIInfo struct {
			Storage struct {
				APIURL  string `json:"apiUrl"`
				DLURL   string `json:"downloadUrl"`
				MinPart int64  `json:"absoluteMinimumPartSize"`
			} `json:"storageApi"`
		} `json:"apiInfo"`
	}
	st, body := c.authorize(srv.KeyID(), srv.Key(), "v3")
	if st != 200 {
		t.Fatalf("authorize: %d %s", st, body)
	}
	if err := json.Unmarshal(body, &auth); err != nil {
		t.Fatal(err)
	}
	c.token, c.apiURL, c.dlURL = auth.Token, auth.APIInfo.Storage.APIURL, auth.APIInfo.Storage.DLURL
	if c.token == "" || c.apiURL == "" || c.dlURL == "" || auth.APIInfo.Storage.MinPart == 0 {
		t.Fatalf("incomplete authorize reply: %s", body)
	}
	return c
}

func (c *client) authorize(id, key, version string) (int, []byte) {
	req, _ := http.NewRequest("GET", c.srv.URL()+"/b2api/"+version+"/b2_authorize_account", nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(id+":"+key)))
	return c.do(req)
}

func (c *client) do(req *http.Request) (int, []byte) {
	c.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// call posts a JSON API call and decodes the reply into out (if not nil).
func (c *client) call(name string, params any, out any) (int, apiError) {
	c.t.Helper()
	buf, _ := json.Marshal(params)
	req, _ := http.NewRequest("POST", c.apiURL+"/b2api/v3/"+name, bytes.NewReader(buf))
	req.Header.Set("Authorization", c.token)
	st, body := c.do(req)
	var e apiError
	if st != 200 {
		if err := json.Unmarshal(body, &e); err != nil {
			c.t.Fatalf("%s: error reply is not B2's JSON shape: %s", name, body)
		}
		if e.Status != st || e.Code == "" || e.Message == "" {
			c.t.Fatalf("%s: error reply %s lacks status/code/message or disagrees with HTTP %d", name, body, st)
		}
		return st, e
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			c.t.Fatalf("%s: decode reply %s: %v", name, body, err)
		}
	}
	return st, e
}

func sha(b []byte) string { h := sha1.Sum(b); return hex.EncodeToString(h[:]) }

type fileReply struct {
	FileID        string            `json:"fileId"`
	FileName      string            `json:"fileName"`
	Action        string            `json:"action"`
	ContentLength int64             `json:"contentLength"`
	ContentSha1   string            `json:"contentSha1"`
	FileInfo      map[string]string `json:"fileInfo"`
	FileRetention struct {
		Value struct {
			Mode  *string `json:"mode"`
			Until *int64  `json:"retainUntilTimestamp"`
		} `json:"value"`
	} `json:"fileRetention"`
}

// upload sends b2_upload_file; sum is the X-Bz-Content-Sha1 value.
func (c *client) upload(name string, data []byte, sum string, extra map[string]string) (int, apiError, fileReply) {
	c.t.Helper()
	var u struct {
		URL   string `json:"uploadUrl"`
		Token string `json:"authorizationToken"`
	}
	if st, e := c.call("b2_get_upload_url", map[string]string{"bucketId": c.bucketID}, &u); st != 200 {
		c.t.Fatalf("get upload url: %v", e)
	}
	req, _ := http.NewRequest("POST", u.URL, bytes.NewReader(data))
	req.Header.Set("Authorization", u.Token)
	req.Header.Set("X-Bz-File-Name", name)
	req.Header.Set("Content-Type", "b2/x-auto")
	req.Header.Set("X-Bz-Content-Sha1", sum)
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	st, body := c.do(req)
	var f fileReply
	var e apiError
	if st == 200 {
		json.Unmarshal(body, &f)
	} else {
		json.Unmarshal(body, &e)
	}
	return st, e, f
}

func (c *client) download(name, rng string) (int, http.Header, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.dlURL+"/file/bkt/"+name, nil)
	req.Header.Set("Authorization", c.token)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func TestAuthorize(t *testing.T) {
	c := newClient(t, false)
	for _, v := range []string{"v2", "v3"} {
		st, body := c.authorize(c.srv.KeyID(), "wrong", v)
		var e apiError
		json.Unmarshal(body, &e)
		if st != 401 || e.Status != 401 || e.Code != "bad_auth_token" {
			t.Errorf("%s wrong key: %d %s, want 401 bad_auth_token", v, st, body)
		}
	}
	st, body := c.authorize(c.srv.KeyID(), c.srv.Key(), "v2")
	if st != 200 || !strings.Contains(string(body), `"apiUrl"`) || !strings.Contains(string(body), `"absoluteMinimumPartSize"`) {
		t.Errorf("v2 authorize: %d %s", st, body)
	}
	c.token = "nonsense"
	if st, e := c.call("b2_list_buckets", map[string]string{"accountId": "fakeacct0001"}, nil); st != 401 || e.Code != "bad_auth_token" {
		t.Errorf("bad token: %d %v", st, e)
	}
}

func TestExpiredToken(t *testing.T) {
	c := newClient(t, false)
	c.srv.ExpireTokens()
	if st, e := c.call("b2_get_upload_url", map[string]string{"bucketId": c.bucketID}, nil); st != 401 || e.Code != "expired_auth_token" {
		t.Errorf("expired token: %d %v, want 401 expired_auth_token", st, e)
	}
}

func TestUploadSHA1(t *testing.T) {
	c := newClient(t, false)
	data := []byte("hello, b2")
	if st, e, f := c.upload("a.txt", data, sha(data), nil); st != 200 || f.ContentSha1 != sha(data) || f.Action != "upload" || f.ContentLength != int64(len(data)) {
		t.Fatalf("upload: %d %v %+v", st, e, f)
	}
	st, e, _ := c.upload("b.txt", data, sha([]byte("other")), nil)
	if st != 400 || e.Code != "bad_request" {
		t.Errorf("sha1 mismatch: %d %v, want 400 bad_request", st, e)
	}
	if st, e, f := c.upload("c.txt", data, "do_not_verify", nil); st != 200 || f.ContentSha1 != sha(data) {
		t.Errorf("do_not_verify: %d %v %+v", st, e, f)
	}
	if st, e, f := c.upload("d.txt", append(append([]byte{}, data...), sha(data)...), "hex_digits_at_end", nil); st != 200 || f.ContentLength != int64(len(data)) {
		t.Errorf("hex_digits_at_end: %d %v %+v", st, e, f)
	}
	if st, _, _ := c.upload("e.txt", data, "xyz", nil); st != 400 {
		t.Errorf("malformed sha1 accepted: %d", st)
	}
	if st, _, f := c.upload("sp ace/f.txt", data, sha(data), map[string]string{"X-Bz-File-Name": "sp%20ace/f.txt", "X-Bz-Info-Src_last_modified_millis": "123"}); st != 200 || f.FileName != "sp ace/f.txt" || f.FileInfo["src_last_modified_millis"] != "123" {
		t.Errorf("encoded name and info: %d %+v", st, f)
	}
}

func TestDownloadRanges(t *testing.T) {
	c := newClient(t, false)
	data := []byte("0123456789")
	c.upload("r", data, sha(data), nil)
	for _, tc := range []struct {
		rng    string
		status int
		body   string
		cr     string
	}{
		{"", 200, "0123456789", ""},
		{"bytes=2-5", 206, "2345", "bytes 2-5/10"},
		{"bytes=7-", 206, "789", "bytes 7-9/10"},
		{"bytes=-3", 206, "789", "bytes 7-9/10"},
		{"bytes=8-100", 206, "89", "bytes 8-9/10"},
		{"bytes=0-9", 200, "0123456789", ""},     // encloses the whole file
		{"bytes=5-2", 200, "0123456789", ""},     // invalid: whole file
		{"bytes=1-2,4-5", 200, "0123456789", ""}, // several ranges: whole file
		{"bytes=10-", 416, "", "bytes */10"},
		{"bytes=100-200", 416, "", "bytes */10"},
	} {
		st, h, body := c.download("r", tc.rng)
		if st != tc.status {
			t.Errorf("Range %q: status %d, want %d (%s)", tc.rng, st, tc.status, body)
			continue
		}
		if st == 416 {
			var e apiError
			if json.Unmarshal(body, &e); e.Code != "range_not_satisfiable" || e.Status != 416 {
				t.Errorf("Range %q: error %s, want range_not_satisfiable", tc.rng, body)
			}
		} else {
			if string(body) != tc.body {
				t.Errorf("Range %q: body %q, want %q", tc.rng, body, tc.body)
			}
			if h.Get("X-Bz-Content-Sha1") != sha(data) || h.Get("X-Bz-File-Id") == "" || h.Get("Content-Length") != strconv.Itoa(len(tc.body)) {
				t.Errorf("Range %q: headers %v", tc.rng, h)
			}
		}
		if h.Get("Content-Range") != tc.cr {
			t.Errorf("Range %q: Content-Range %q, want %q", tc.rng, h.Get("Content-Range"), tc.cr)
		}
	}
	if st, _, body := c.download("missing", ""); st != 404 || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("missing file: %d %s", st, body)
	}
}

func TestHideAndList(t *testing.T) {
	c := newClient(t, false)
	for _, n := range []string{"d/a", "d/b", "d/b", "e"} {
		c.upload(n, []byte(n), sha([]byte(n)), nil)
	}
	var hidden fileReply
	if st, e := c.call("b2_hide_file", map[string]string{"bucketId": c.bucketID, "fileName": "d/b"}, &hidden); st != 200 || hidden.Action != "hide" {
		t.Fatalf("hide: %d %v %+v", st, e, hidden)
	}
	if st, e := c.call("b2_hide_file", map[string]string{"bucketId": c.bucketID, "fileName": "nope"}, nil); st != 400 {
		t.Errorf("hide of a missing file: %d %v, want 400", st, e)
	}
	var names struct {
		Files []fileReply `json:"files"`
		Next  *string     `json:"nextFileName"`
	}
	c.call("b2_list_file_names", map[string]any{"bucketId": c.bucketID, "prefix": "d/"}, &names)
	if len(names.Files) != 1 || names.Files[0].FileName != "d/a" || names.Next != nil {
		t.Errorf("list_file_names after hide: %+v", names)
	}
	var versions struct {
		Files    []fileReply `json:"files"`
		NextName *string     `json:"nextFileName"`
		NextID   *string     `json:"nextFileId"`
	}
	c.call("b2_list_file_versions", map[string]any{"bucketId": c.bucketID, "prefix": "d/"}, &versions)
	var got []string
	for _, f := range versions.Files {
		got = append(got, f.FileName+":"+f.Action)
	}
	if fmt.Sprint(got) != "[d/a:upload d/b:hide d/b:upload d/b:upload]" {
		t.Errorf("list_file_versions = %v, want names in order, newest first", got)
	}
	// Paging: one at a time, following nextFileName/nextFileId.
	var paged []string
	start, startID := "", ""
	for i := 0; i < 10; i++ {
		params := map[string]any{"bucketId": c.bucketID, "prefix": "d/", "maxFileCount": 1}
		if start != "" {
			params["startFileName"], params["startFileId"] = start, startID
		}
		versions.NextName, versions.NextID = nil, nil
		c.call("b2_list_file_versions", params, &versions)
		for _, f := range versions.Files {
			paged = append(paged, f.FileName+":"+f.Action)
		}
		if versions.NextName == nil {
			break
		}
		start, startID = *versions.NextName, *versions.NextID
	}
	if fmt.Sprint(paged) != fmt.Sprint(got) {
		t.Errorf("paged versions = %v, want %v", paged, got)
	}
	if st, _, _ := c.download("d/b", ""); st != 404 {
		t.Errorf("download of hidden file: %d, want 404", st)
	}
	var folders struct {
		Files []fileReply `json:"files"`
	}
	c.call("b2_list_file_names", map[string]any{"bucketId": c.bucketID, "delimiter": "/"}, &folders)
	if len(folders.Files) != 2 || folders.Files[0].Action != "folder" || folders.Files[0].FileName != "d/" || folders.Files[1].FileName != "e" {
		t.Errorf("delimiter listing: %+v", folders.Files)
	}
}

type largeFile struct {
	c  *client
	id string
}

func (c *client) startLarge(name string, extra map[string]any) (largeFile, int, apiError) {
	params := map[string]any{"bucketId": c.bucketID, "fileName": name, "contentType": "application/octet-stream"}
	for k, v := range extra {
		params[k] = v
	}
	var f fileReply
	st, e := c.call("b2_start_large_file", params, &f)
	return largeFile{c: c, id: f.FileID}, st, e
}

func (l largeFile) part(num int, data []byte, sum string) int {
	var u struct {
		URL   string `json:"uploadUrl"`
		Token string `json:"authorizationToken"`
	}
	if st, e := l.c.call("b2_get_upload_part_url", map[string]string{"fileId": l.id}, &u); st != 200 {
		l.c.t.Fatalf("get upload part url: %v", e)
	}
	req, _ := http.NewRequest("POST", u.URL, bytes.NewReader(data))
	req.Header.Set("Authorization", u.Token)
	req.Header.Set("X-Bz-Part-Number", strconv.Itoa(num))
	req.Header.Set("X-Bz-Content-Sha1", sum)
	st, _ := l.c.do(req)
	return st
}

func (l largeFile) finish(sums ...string) (int, apiError, fileReply) {
	var f fileReply
	st, e := l.c.call("b2_finish_large_file", map[string]any{"fileId": l.id, "partSha1Array": sums}, &f)
	return st, e, f
}

func TestLargeFile(t *testing.T) {
	c := newClient(t, false, WithMinPartSize(1000))
	p1, p2, p3 := bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), []byte("tail")
	all := append(append(append([]byte{}, p1...), p2...), p3...)

	lf, st, e := c.startLarge("big", map[string]any{"fileInfo": map[string]string{"large_file_sha1": sha(all)}})
	if st != 200 {
		t.Fatalf("start: %v", e)
	}
	if st := lf.part(2, p2, sha(p1)); st != 400 {
		t.Errorf("part with wrong sha1: %d, want 400", st)
	}
	if st := lf.part(0, p1, sha(p1)); st != 400 {
		t.Errorf("part number 0: %d, want 400", st)
	}
	for i, p := range [][]byte{p1, p2, p3} {
		if st := lf.part(i+1, p, sha(p)); st != 200 {
			t.Fatalf("part %d: %d", i+1, st)
		}
	}
	if st, _, _ := c.download("big", ""); st != 404 {
		t.Errorf("unfinished large file downloadable: %d", st)
	}
	if st, _, _ := lf.finish(sha(p1), sha(p3), sha(p2)); st != 400 {
		t.Errorf("finish with parts out of order: %d, want 400", st)
	}
	if st, _, _ := lf.finish(sha(p1), sha(p2)); st != 400 {
		t.Errorf("finish missing a part: %d, want 400", st)
	}
	st, e, f := lf.finish(sha(p1), sha(p2), sha(p3))
	if st != 200 || f.ContentSha1 != "none" || f.ContentLength != int64(len(all)) || f.FileInfo["large_file_sha1"] != sha(all) {
		t.Fatalf("finish: %d %v %+v", st, e, f)
	}
	if st, _, body := c.download("big", "bytes=990-1009"); st != 206 || string(body) != string(all[990:1010]) {
		t.Errorf("range across parts: %d %q", st, body)
	}
	if c.srv.Calls("b2_start_large_file") != 1 || c.srv.Calls("b2_finish_large_file") != 3 {
		t.Errorf("call counts: start %d finish %d", c.srv.Calls("b2_start_large_file"), c.srv.Calls("b2_finish_large_file"))
	}

	// A part other than the last below the minimum size is refused at finish.
	small, _, _ := c.startLarge("small-parts", nil)
	small.part(1, p3, sha(p3))
	small.part(2, p1, sha(p1))
	if st, e, _ := small.finish(sha(p3), sha(p1)); st != 400 || !strings.Contains(e.Message, "minimum part size") {
		t.Errorf("short first part: %d %v, want 400 naming the minimum part size", st, e)
	}
	var cancelled map[string]any
	if st, e := c.call("b2_cancel_large_file", map[string]string{"fileId": small.id}, &cancelled); st != 200 || cancelled["fileName"] != "small-parts" {
		t.Errorf("cancel: %d %v %v", st, e, cancelled)
	}
	if st, _, _ := small.finish(sha(p3), sha(p1)); st != 400 {
		t.Errorf("finish after cancel: %d, want 400", st)
	}
	// A wrong large_file_sha1 is caught at finish.
	bad, _, _ := c.startLarge("bad-sha", map[string]any{"fileInfo": map[string]string{"large_file_sha1": sha([]byte("x"))}})
	bad.part(1, p1, sha(p1))
	if st, _, _ := bad.finish(sha(p1)); st != 400 {
		t.Errorf("large_file_sha1 mismatch: %d, want 400", st)
	}
}

func TestRetention(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newClient(t, true, WithClock(func() time.Time { return now }))
	until := now.Add(24 * time.Hour).UnixMilli()
	lockHeaders := func(mode string) map[string]string {
		return map[string]string{"X-Bz-File-Retention-Mode": mode, "X-Bz-File-Retention-Retain-Until-Timestamp": strconv.FormatInt(until, 10)}
	}
	data := []byte("locked")
	_, _, gov := c.upload("gov", data, sha(data), lockHeaders("governance"))
	_, _, comp := c.upload("comp", data, sha(data), lockHeaders("compliance"))
	if gov.FileRetention.Value.Mode == nil || *gov.FileRetention.Value.Mode != "governance" || *gov.FileRetention.Value.Until != until {
		t.Fatalf("upload reply lacks retention: %+v", gov)
	}
	if st, _, _ := c.upload("past", data, sha(data), map[string]string{"X-Bz-File-Retention-Mode": "governance", "X-Bz-File-Retention-Retain-Until-Timestamp": "1000"}); st != 400 {
		t.Errorf("retain-until in the past: %d, want 400", st)
	}
	del := func(f fileReply, bypass bool) (int, apiError) {
		return c.call("b2_delete_file_version", map[string]any{"fileName": f.FileName, "fileId": f.FileID, "bypassGovernance": bypass}, nil)
	}
	if st, e := del(gov, false); st != 401 || e.Code != "access_denied" {
		t.Errorf("delete of governance-locked version: %d %v, want 401 access_denied", st, e)
	}
	if st, e := del(comp, true); st != 401 || e.Code != "access_denied" {
		t.Errorf("delete of compliance-locked version with bypass: %d %v, want refused", st, e)
	}
	if st, e := del(gov, true); st != 200 {
		t.Errorf("delete of governance-locked version with bypassGovernance: %d %v", st, e)
	}
	if st, e := del(gov, true); st != 400 || e.Code != "file_not_present" {
		t.Errorf("delete of a deleted version: %d %v, want 400 file_not_present", st, e)
	}
	lf, st, e := c.startLarge("big", map[string]any{"fileRetention": map[string]any{"mode": "compliance", "retainUntilTimestamp": until}})
	if st != 200 {
		t.Fatalf("start large with retention: %v", e)
	}
	lf.part(1, data, sha(data))
	if _, _, f := lf.finish(sha(data)); f.FileRetention.Value.Mode == nil || *f.FileRetention.Value.Mode != "compliance" {
		t.Errorf("large file lost its retention: %+v", f)
	}

	plain := newClient(t, false)
	if st, _, _ := plain.upload("x", data, sha(data), lockHeaders("governance")); st != 400 {
		t.Errorf("retention on a bucket without Object Lock: %d, want 400", st)
	}
}

func TestFaults(t *testing.T) {
	c := newClient(t, false)
	c.srv.FailNext(2, Fault{Method: "b2_list_buckets", Status: 503, RetryAfter: 1500 * time.Millisecond})
	for i := 0; i < 2; i++ {
		buf, _ := json.Marshal(map[string]string{"accountId": "fakeacct0001"})
		req, _ := http.NewRequest("POST", c.apiURL+"/b2api/v3/b2_list_buckets", bytes.NewReader(buf))
		req.Header.Set("Authorization", c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
			t.Errorf("fault %d: %d Retry-After %q, want 503 and 2", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if st, e := c.call("b2_list_buckets", map[string]string{"accountId": "fakeacct0001"}, nil); st != 200 {
		t.Errorf("third call still failing: %v", e)
	}
	c.srv.FailNext(1, Fault{Drop: true})
	req, _ := http.NewRequest("POST", c.apiURL+"/b2api/v3/b2_list_buckets", strings.NewReader("{}"))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped connection answered %d", resp.StatusCode)
	}
	if got := c.srv.Calls("b2_list_buckets"); got != 4 {
		t.Errorf("Calls(b2_list_buckets) = %d, want 4", got)
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		h          string
		size       int64
		start, end int64
		res        rangeResult
	}{
		{"", 10, 0, 9, rangeWhole},
		{"bytes=0-0", 10, 0, 0, rangePartial},
		{"bytes=9-9", 10, 9, 9, rangePartial},
		{"bytes=-1", 10, 9, 9, rangePartial},
		{"bytes=-10", 10, 0, 9, rangeWhole},
		{"bytes=-0", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=0-", 0, 0, 0, rangeUnsatisfiable},
		{"bytes=x-1", 10, 0, 9, rangeWhole},
		{"items=0-1", 10, 0, 9, rangeWhole},
		{"bytes=99999999999999999999-", 10, 0, 9, rangeWhole},
	} {
		s, e, r := parseRange(tc.h, tc.size)
		if r != tc.res || (r != rangeUnsatisfiable && (s != tc.start || e != tc.end)) {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v", tc.h, tc.size, s, e, r, tc.start, tc.end, tc.res)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-1", "bytes=-5", "bytes=3-", "bytes=5-2", "bytes=1-2,3-4", "bytes= 1 - 2", "bytes=-"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		start, end, res := parseRange(h, size)
		switch res {
		case rangePartial:
			if start < 0 || end < start || end >= size || (start == 0 && end == size-1) {
				t.Fatalf("parseRange(%q, %d) = partial [%d, %d]", h, size, start, end)
			}
		case rangeWhole:
			if start != 0 || end != size-1 {
				t.Fatalf("parseRange(%q, %d) = whole [%d, %d]", h, size, start, end)
			}
		case rangeUnsatisfiable:
		default:
			t.Fatalf("unknown result %v", res)
		}
	})
}
