// Command ferretdb-testbed serves the MongoDB wire protocol on loopback for
// Amber's test bed: FerretDB embedded in-process with its SQLite handler, its
// data in one directory. It prints "listening <host:port>" on stdout once it
// accepts connections and stops on SIGINT or SIGTERM.
//
//	ferretdb-testbed -listen 127.0.0.1:0 -dir /tmp/x
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on (port 0 picks a free one)")
	dir := flag.String("dir", "", "directory holding the SQLite databases (required)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb-testbed: -dir is required")
		os.Exit(2)
	}
	if err := run(*listen, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-testbed:", err)
		os.Exit(1)
	}
}

func run(listen, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	addr, err := freeAddr(listen)
	if err != nil {
		return err
	}
	u := url.URL{Scheme: "file", Path: abs + "/"}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: u.String(),
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return fmt.Errorf("start FerretDB: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	// Run returns only on error or shutdown; wait until the port answers.
	for {
		select {
		case err := <-done:
			return fmt.Errorf("FerretDB stopped: %v", err)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("FerretDB stopped: %v", err)
		case <-ctx.Done():
			return nil
		default:
		}
	}
	fmt.Printf("listening %s\n", addr)
	if err := <-done; err != nil && ctx.Err() == nil {
		return fmt.Errorf("FerretDB stopped: %w", err)
	}
	return nil
}

// freeAddr resolves port 0 to a free port: FerretDB's listener does not
// report the port it bound.
func freeAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return listen, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port)), nil
}
