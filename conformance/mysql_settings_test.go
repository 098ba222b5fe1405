package conformance_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestMySQLSettingsAndOptions: the engine's target settings and archiving
// options reach the plugin from the command line. `amber archive
// --setting lineage=orders --option server_id=4242` connects with that
// replica id and archives into the stream mysql-orders; a physical backup
// given the same setting opens that stream's recoverable window (a window
// needs both); a misspelt option is refused before anything is archived.
func TestMySQLSettingsAndOptions(t *testing.T) {
	bin := mysqlBins(t)
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, "CREATE TABLE app.m (id int PRIMARY KEY)")
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(args ...string) string { t.Helper(); return amberRun(t, mysqlAmberRunner(bin), repo, args...) }
	run("repo", "init")

	bad := mysqlAmber(bin, repo, "archive", "--engine", "mysql", "--dsn", src.DSN(), "--option", "serverid=4242")
	out, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown option serverid") || !strings.Contains(string(out), "server_id") {
		t.Fatalf("archive --option serverid=4242: %v\n%s\nwant a refusal naming the option and the ones it takes", err, out)
	}

	var archErr bytes.Buffer
	arch := mysqlAmber(bin, repo, "archive", "--engine", "mysql", "--dsn", src.DSN(), "--flush-interval", "200ms",
		"--option", "server_id=4242", "--setting", "lineage=orders")
	arch.Stderr = &archErr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	archDone := make(chan error, 1)
	go func() { archDone <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(src.SQL(t, "SHOW SLAVE HOSTS"), "4242"); {
		if time.Now().After(deadline) {
			t.Fatalf("no replica with server id 4242 registered within 60 s:\n%s", archErr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	src.SQL(t, "INSERT INTO app.m VALUES (1), (2)")
	run("backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "physical", "--setting", "lineage=orders")
	src.SQL(t, "INSERT INTO app.m VALUES (3)")
	time.Sleep(time.Second)
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("amber archive: %v\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("amber archive did not stop within 60 s of SIGTERM:\n%s", archErr.String())
	}

	var ls struct {
		Backups []struct {
			Engine string `json:"engine"`
		} `json:"backups"`
		Windows []struct {
			Stream string `json:"stream"`
		} `json:"windows"`
	}
	if err := json.Unmarshal([]byte(run("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	var streams []string
	for _, w := range ls.Windows {
		streams = append(streams, w.Stream)
	}
	if len(ls.Backups) != 1 || len(streams) != 1 || streams[0] != "mysql-orders" {
		t.Fatalf("amber ls: %d backups, windows of streams %v; want one backup in the window of mysql-orders", len(ls.Backups), streams)
	}
}
