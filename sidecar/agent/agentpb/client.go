package agentpb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ClientTLS builds the TLS configuration for calling an agent: the
// client's certificate and key, and the CA that signed the agents'
// certificates. serverName is the name the agent's certificate must carry
// (a DNS name or IP address in its subject alternative names).
func ClientTLS(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %s: %w", certFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: serverName}, nil
}

// Client is a connection to one agent.
type Client struct {
	AgentServiceClient
	conn *grpc.ClientConn
}

// Dial returns a client of the agent at addr ("host:port") over mutual TLS
// with cfg (see ClientTLS). It does not wait for the connection: the first
// call does, and fails UNAVAILABLE if the agent refuses the handshake.
func Dial(addr string, cfg *tls.Config, opts ...grpc.DialOption) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("agentpb: the agent API needs TLS: pass a configuration from ClientTLS")
	}
	cfg = cfg.Clone()
	if cfg.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to agent %s: %w", addr, err)
	}
	return &Client{AgentServiceClient: NewAgentServiceClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RunBackup runs a backup, calls progress (when not nil) with each
// progress message, and returns the result.
func (c *Client) RunBackup(ctx context.Context, req *BackupRequest, progress func(*Progress)) (*BackupResult, error) {
	stream, err := c.Backup(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("agent ended the backup stream without a result")
		}
		if err != nil {
			return nil, err
		}
		switch e := ev.GetEvent().(type) {
		case *BackupEvent_Progress:
			if progress != nil {
				progress(e.Progress)
			}
		case *BackupEvent_Result:
			return e.Result, nil
		}
	}
}
