package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// The driver as the kubelet and csi-snapshotter use it, over its sockets:
// it registers, snapshots are copies taken once per name, a volume is
// bind-mounted at the target and unmounted again.
func TestDriver(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "amber-csi-hostpath")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Short socket paths: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vols, snaps, reg := filepath.Join(dir, "v"), filepath.Join(dir, "s"), filepath.Join(dir, "r")
	sock := filepath.Join(dir, "csi.sock")
	if err := os.MkdirAll(filepath.Join(vols, "pvc-1", "pgdata"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vols, "pvc-1", "pgdata", "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--endpoint="+sock, "--registration-dir="+reg, "--volumes-dir="+vols, "--snapshots-dir="+snaps, "--node-id=n1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	dial := func(path string) *grpc.ClientConn {
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(path); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx := context.Background()

	info, err := registerapi.NewRegistrationClient(dial(filepath.Join(reg, "hostpath.csi.amber.dev-reg.sock"))).GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil || info.Type != registerapi.CSIPlugin || info.Name != "hostpath.csi.amber.dev" || info.Endpoint != sock {
		t.Fatalf("registration info %+v, %v", info, err)
	}

	conn := dial(sock)
	ctl, node := csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	pi, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || pi.Name != "hostpath.csi.amber.dev" {
		t.Fatalf("plugin info %+v, %v", pi, err)
	}

	snap, err := ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-1"})
	if err != nil || !snap.Snapshot.ReadyToUse || snap.Snapshot.SourceVolumeId != "pvc-1" || snap.Snapshot.SizeBytes != 3 {
		t.Fatalf("create snapshot: %+v, %v", snap, err)
	}
	id := snap.Snapshot.SnapshotId
	// The copy is the volume as it was: a later write does not reach it.
	if err := os.WriteFile(filepath.Join(vols, "pvc-1", "pgdata", "PG_VERSION"), []byte("16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(snaps, id, "pgdata", "PG_VERSION")); err != nil || string(b) != "15\n" {
		t.Fatalf("snapshot content %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(snaps, id, "pgdata", "PG_VERSION")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file mode: %v, %v", st, err)
	}
	again, err := ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-1"})
	if err != nil || again.Snapshot.SnapshotId != id {
		t.Fatalf("a retried CreateSnapshot gave %+v, %v; want the same snapshot", again, err)
	}
	if _, err := ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-2", SourceVolumeId: "../etc"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a source id outside the volumes: %v", err)
	}
	list, err := ctl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "pvc-1"})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].Snapshot.SnapshotId != id {
		t.Fatalf("list snapshots: %+v, %v", list, err)
	}

	if os.Geteuid() == 0 {
		target := filepath.Join(dir, "target", "mount")
		mcap := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
		if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-1", TargetPath: target, VolumeCapability: mcap}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(target, "pgdata", "PG_VERSION"))
		if err != nil || string(b) != "16\n" {
			t.Errorf("published volume reads %q, %v", b, err)
		}
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-1", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), target) {
			t.Errorf("%s still mounted after unpublish", target)
		}
	} else {
		t.Log("not root: NodePublishVolume (a bind mount) not tried")
	}

	if _, err := ctl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(snaps, id)); !os.IsNotExist(err) {
		t.Errorf("snapshot directory left after DeleteSnapshot: %v", err)
	}
}
