package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api/clock"
)

// TLSFiles name the PEM files of the agent's TLS identity and of the CA
// its callers' certificates must chain to.
type TLSFiles struct {
	Cert string // the agent's certificate, followed by any intermediates
	Key  string // its private key
	CA   string // the CA certificate(s) that sign callers' client certificates
}

// ServerTLS returns the agent API's TLS configuration: TLS 1.3 only, and a
// client certificate required and verified against f.CA during the
// handshake, so a caller without one is refused before any call is read.
// Certificate validity is judged by clk. allowed, when not empty, lists the
// names (subject common name, DNS or URI subject alternative name) of
// which a client certificate must carry one.
//
// The files are read again when one of them changes, so a rotated
// certificate or CA applies to new connections without a restart; a
// rotation that leaves unreadable files keeps the previous ones (and logs).
func ServerTLS(f TLSFiles, clk clock.Clock, allowed []string, log *slog.Logger) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("the agent API needs a certificate, its key and a client CA file (--tls-cert, --tls-key, --tls-ca): it never serves without mutual TLS")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &tlsSource{files: f, clk: clock.Or(clk), allowed: allowed, log: log}
	if err := s.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: s.forClient}, nil
}

type tlsSource struct {
	files   TLSFiles
	clk     clock.Clock
	allowed []string
	log     *slog.Logger

	mu     sync.Mutex
	stamps [3]fileStamp
	cfg    *tls.Config
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func (s *tlsSource) paths() [3]string { return [3]string{s.files.Cert, s.files.Key, s.files.CA} }

func (s *tlsSource) stat() ([3]fileStamp, error) {
	var st [3]fileStamp
	for i, p := range s.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			return st, err
		}
		st[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return st, nil
}

// load reads the three files and builds the per-connection configuration.
func (s *tlsSource) load() error {
	stamps, err := s.stat()
	if err != nil {
		return fmt.Errorf("agent TLS files: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("load agent certificate %s and key: %w", s.files.Cert, err)
	}
	pem, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("read client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("client CA file %s holds no PEM certificate", s.files.CA)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		Time:         s.clk.Now,
		NextProtos:   []string{"h2"}, // gRPC runs over HTTP/2
	}
	if len(s.allowed) > 0 {
		cfg.VerifyConnection = s.verifyName
	}
	s.mu.Lock()
	s.cfg, s.stamps = cfg, stamps
	s.mu.Unlock()
	return nil
}

// forClient returns the configuration for a new connection, reloading the
// files first when they changed.
func (s *tlsSource) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	stamps, err := s.stat()
	s.mu.Lock()
	changed := err == nil && stamps != s.stamps
	cfg := s.cfg
	s.mu.Unlock()
	if changed {
		if err := s.load(); err != nil {
			s.log.Error("agent TLS files changed but cannot be loaded; keeping the previous ones", "err", err)
			s.mu.Lock()
			s.stamps = stamps // do not retry on every handshake until they change again
			s.mu.Unlock()
		} else {
			s.log.Info("agent TLS files reloaded")
		}
		s.mu.Lock()
		cfg = s.cfg
		s.mu.Unlock()
	}
	return cfg, nil
}

// verifyName refuses a verified client certificate whose names are not allowed.
func (s *tlsSource) verifyName(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("no verified client certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	names := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	for _, n := range names {
		if n != "" && slices.Contains(s.allowed, n) {
			return nil
		}
	}
	return fmt.Errorf("client certificate names %q are not among the allowed callers", names)
}
