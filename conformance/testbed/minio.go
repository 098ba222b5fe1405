package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a MinIO server started for a test, listening on 127.0.0.1.
type MinIO struct {
	// Endpoint is host:port of the S3 API (plain HTTP, path-style).
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey string
	SecretKey string
	// Dir holds the server's data.
	Dir string

	cmd  *exec.Cmd
	logs *minioLog
	done chan struct{}
}

// StartMinIO starts a MinIO server on random loopback ports with its data in
// a temporary directory, waits until it is live, and stops it when t ends.
// It skips the test (or fails it under AMBER_TEST_REQUIRE_ALL=1) when the
// minio binary is missing.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	return StartMinIOWith(t, MinIOOptions{})
}

// MinIOOptions choose how StartMinIOWith runs the server.
type MinIOOptions struct {
	// Erasure runs MinIO in erasure mode over four directories, which gives
	// bucket versioning and Object Lock (one directory gives neither).
	Erasure bool
	// Host is the address MinIO listens on; empty: 127.0.0.1. A
	// Kubernetes test cluster's node address lets its pods reach it.
	Host string
}

// StartMinIOWith is StartMinIO with options.
func StartMinIOWith(t testing.TB, opts MinIOOptions) *MinIO {
	t.Helper()
	bin := Tool(t, "minio")
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a random port may be taken meanwhile
		m, err := NewMinIO(bin, filepath.Join(dir, fmt.Sprint(attempt)), opts)
		if err == nil {
			t.Cleanup(m.stop)
			return m
		}
		lastErr = err
	}
	t.Fatalf("start minio: %v", lastErr)
	return nil
}

// NewMinIO starts the minio binary bin with its data in dir, outside a
// test; Stop ends it.
func NewMinIO(bin, dir string, opts MinIOOptions) (*MinIO, error) {
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port, err := freePortOn(net.ParseIP(host))
	if err != nil {
		return nil, err
	}
	consolePort, err := freePortOn(net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	m := &MinIO{
		Endpoint:  net.JoinHostPort(host, fmt.Sprint(port)),
		AccessKey: "amber-" + minioRandomHex(4),
		SecretKey: minioRandomHex(16),
		Dir:       filepath.Join(dir, "data"),
		logs:      &minioLog{},
		done:      make(chan struct{}),
	}
	console := fmt.Sprintf("127.0.0.1:%d", consolePort)
	drives := m.Dir
	var extraEnv []string
	if opts.Erasure {
		for i := 1; i <= 4; i++ {
			if err := os.MkdirAll(filepath.Join(m.Dir, fmt.Sprintf("d%d", i)), 0o700); err != nil {
				return nil, err
			}
		}
		// MinIO expands the ellipsis itself; MINIO_CI_CD lets the drives
		// sit on the root disk.
		drives = filepath.Join(m.Dir, "d{1...4}")
		extraEnv = append(extraEnv, "MINIO_CI_CD=1")
	}
	m.cmd = exec.Command(bin, "server", drives, "--quiet", "--address", m.Endpoint, "--console-address", console)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CONFIG_ENV_FILE=",
	)
	m.cmd.Env = append(m.cmd.Env, extraEnv...)
	m.cmd.Stdout = m.logs
	m.cmd.Stderr = m.logs
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = m.cmd.Wait()
		close(m.done)
	}()
	if err := m.waitLive(60 * time.Second); err != nil {
		m.stop()
		return nil, fmt.Errorf("%w\nminio output:\n%s", err, m.logs.tail(4000))
	}
	return m, nil
}

func (m *MinIO) waitLive(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	url := "http://" + m.Endpoint + "/minio/health/live"
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return fmt.Errorf("minio exited early: %v", m.cmd.ProcessState)
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("minio at %s not live after %s", m.Endpoint, timeout)
}

// Stop ends a MinIO that NewMinIO started (a test's ends with the test).
func (m *MinIO) Stop() { m.stop() }

func (m *MinIO) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
	}
}

// Client returns a minio-go client with the root credentials.
func (m *MinIO) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:       false,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatalf("minio client: %v", err)
	}
	return c
}

// CreateBucket creates a bucket (a fresh random name when name is empty) and
// returns its name.
func (m *MinIO) CreateBucket(t testing.TB, name string) string {
	t.Helper()
	if name == "" {
		name = "amber-" + minioRandomHex(6)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("create bucket %s on minio %s: %v", name, m.Endpoint, err)
	}
	return name
}

// MakeBucket creates a bucket, outside a test.
func (m *MinIO) MakeBucket(ctx context.Context, name string) error {
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	return c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
}

// Logs returns the server's output so far.
func (m *MinIO) Logs() string { return m.logs.tail(1 << 20) }

func minioRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// minioLog collects a child's output safely.
type minioLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *minioLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *minioLog) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
