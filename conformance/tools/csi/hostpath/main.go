// Command amber-csi-hostpath is a CSI driver FOR TESTS ONLY: volumes are
// directories under --volumes-dir (created by the test bed's provisioner,
// named by their volume handle), a snapshot is a copy of a volume's
// directory under --snapshots-dir, and publishing a volume bind-mounts its
// directory at the kubelet's target path. It serves the identity,
// controller (snapshots only) and node services on one socket, and
// registers itself with the kubelet through the plugin registration socket
// it serves in --registration-dir (the kubelet's plugins_registry), so no
// node-driver-registrar is needed. Run it in the kubelet's mount
// namespace. It keeps no state but the directories.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

var (
	driverName   = flag.String("driver-name", "hostpath.csi.amber.dev", "the driver's name")
	endpoint     = flag.String("endpoint", "", "unix socket path of the CSI services")
	registration = flag.String("registration-dir", "", "the kubelet's plugin registration directory (<root-dir>/plugins_registry); empty: do not register")
	volumesDir   = flag.String("volumes-dir", "", "directory holding one directory per volume, named by its handle")
	snapshotsDir = flag.String("snapshots-dir", "", "directory the snapshots are copied into, one directory per snapshot id")
	nodeID       = flag.String("node-id", "", "the node's name")
)

func main() {
	flag.Parse()
	if *endpoint == "" || *volumesDir == "" || *snapshotsDir == "" || *nodeID == "" {
		log.Fatal("usage: amber-csi-hostpath --endpoint SOCK --volumes-dir DIR --snapshots-dir DIR --node-id NODE [--registration-dir DIR]")
	}
	if err := os.MkdirAll(*snapshotsDir, 0o755); err != nil {
		log.Fatal(err)
	}
	d := &driver{}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		res, err := h(ctx, req)
		if err != nil {
			log.Printf("%s: %v", info.FullMethod, err)
		} else if !strings.Contains(info.FullMethod, "Probe") && !strings.Contains(info.FullMethod, "GetCapabilities") {
			log.Printf("%s: ok", info.FullMethod)
		}
		return res, err
	}))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	l, err := listenUnix(*endpoint)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(srv.Serve(l)) }()

	var reg *grpc.Server
	if *registration != "" {
		reg = grpc.NewServer()
		registerapi.RegisterRegistrationServer(reg, &registrar{})
		rl, err := listenUnix(filepath.Join(*registration, *driverName+"-reg.sock"))
		if err != nil {
			log.Fatal(err)
		}
		go func() { log.Fatal(reg.Serve(rl)) }()
	}
	log.Printf("%s serving on %s", *driverName, *endpoint)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if reg != nil {
		reg.Stop()
	}
	srv.Stop()
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

// registrar answers the kubelet's plugin watcher.
type registrar struct {
	registerapi.UnimplementedRegistrationServer
}

func (registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: *driverName, Endpoint: *endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (registrar) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !st.PluginRegistered {
		log.Printf("the kubelet refused the registration: %s", st.Error)
	} else {
		log.Printf("registered with the kubelet")
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
}

// Identity.

func (*driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: *driverName, VendorVersion: "test"}, nil
}

func (*driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

func (*driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// Controller: snapshots only (the test bed's provisioner makes volumes).

func (*driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// safeName refuses ids that are not one path element.
func safeName(id string) error {
	if id == "" || id != filepath.Base(id) || strings.HasPrefix(id, ".") {
		return status.Errorf(codes.InvalidArgument, "bad id %q", id)
	}
	return nil
}

// snapshotID is the snapshot's id for a request name: the same name gives
// the same id, so a retried CreateSnapshot is idempotent.
func snapshotID(name string) string {
	h := sha256.Sum256([]byte(name))
	return "snap-" + hex.EncodeToString(h[:12])
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func (*driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "no name")
	}
	src := req.GetSourceVolumeId()
	if err := safeName(src); err != nil {
		return nil, err
	}
	id := snapshotID(req.GetName())
	dst := filepath.Join(*snapshotsDir, id)
	meta := dst + ".source"
	if b, err := os.ReadFile(meta); err == nil {
		if string(b) != src {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists for another volume", req.GetName())
		}
		return snapshotResponse(id, src, dst)
	}
	if _, err := os.Stat(filepath.Join(*volumesDir, src)); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", src, err)
	}
	tmp := dst + ".tmp"
	_ = os.RemoveAll(tmp)
	// cp -a keeps owners, modes and times: the copy is the volume as it was.
	if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(*volumesDir, src), tmp).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, status.Errorf(codes.Internal, "copy volume %s: %v: %s", src, err, out)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.WriteFile(meta, []byte(src), 0o644); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return snapshotResponse(id, src, dst)
}

func snapshotResponse(id, src, dir string) (*csi.CreateSnapshotResponse, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{SnapshotId: id, SourceVolumeId: src, SizeBytes: dirSize(dir),
		CreationTime: timestamppb.New(st.ModTime()), ReadyToUse: true}}, nil
}

func (*driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := safeName(id); err != nil {
		return nil, err
	}
	dst := filepath.Join(*snapshotsDir, id)
	if err := os.RemoveAll(dst); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	_ = os.Remove(dst + ".source")
	return &csi.DeleteSnapshotResponse{}, nil
}

func (*driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	ents, err := os.ReadDir(*snapshotsDir)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := &csi.ListSnapshotsResponse{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".source")
		if !ok || (req.GetSnapshotId() != "" && id != req.GetSnapshotId()) {
			continue
		}
		src, err := os.ReadFile(filepath.Join(*snapshotsDir, e.Name()))
		if err != nil || (req.GetSourceVolumeId() != "" && string(src) != req.GetSourceVolumeId()) {
			continue
		}
		r, err := snapshotResponse(id, string(src), filepath.Join(*snapshotsDir, id))
		if err != nil {
			continue
		}
		out.Entries = append(out.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: r.Snapshot})
	}
	return out, nil
}

// Node.

func (*driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: *nodeID}, nil
}

func (*driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func isMounted(target string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == target {
			return true
		}
	}
	return false
}

func (*driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if err := safeName(id); err != nil {
		return nil, err
	}
	if target == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "no target path or capability")
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	src := filepath.Join(*volumesDir, id)
	if _, err := os.Stat(src); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if isMounted(target) {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s on %s: %v", src, target, err)
	}
	if req.GetReadonly() {
		if err := syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			_ = syscall.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (*driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "no target path")
	}
	for isMounted(target) {
		if err := syscall.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func init() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix(fmt.Sprintf("csi-hostpath[%d] ", os.Getpid()))
}
