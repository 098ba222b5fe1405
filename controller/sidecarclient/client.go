// Package sidecarclient is the controller's client of the sidecars' API:
// it implements sidecarapi.Dialer over the agent's gRPC service
// (sidecar/agent/agentpb) with mutual TLS, dialling a pod's IP with the
// pod's sidecar identity as the TLS server name.
//
// It imports agentpb (a leaf package) and nothing else of the sidecar.
package sidecarclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
)

// Dialer reaches the sidecar of a pod.
type Dialer struct {
	// TLS returns the controller's client configuration (its certificate
	// and the CA); called for every dial so renewed certificates are used.
	TLS func() (*tls.Config, error)
	// Port is the sidecars' API port (inject.DefaultAPIPort if zero).
	Port int32
}

var _ sidecarapi.Dialer = (*Dialer)(nil)

// Dial connects to pod's sidecar. The connection is made by the first call.
func (d *Dialer) Dial(_ context.Context, pod *corev1.Pod) (sidecarapi.Sidecar, error) {
	if pod.Status.PodIP == "" {
		return nil, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
	}
	cfg, err := d.TLS()
	if err != nil {
		return nil, fmt.Errorf("client certificate for the sidecar API: %w", err)
	}
	cfg = cfg.Clone()
	cfg.ServerName = pod.Annotations[inject.AnnotationIdentity]
	if cfg.ServerName == "" {
		cfg.ServerName = certs.SidecarIdentity(pod.Namespace, pod.Name)
	}
	port := d.Port
	if port == 0 {
		port = inject.DefaultAPIPort
	}
	c, err := agentpb.Dial(net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), cfg)
	if err != nil {
		return nil, err
	}
	return &sidecar{c: c}, nil
}

type sidecar struct{ c *agentpb.Client }

func (s *sidecar) Close() error { return s.c.Close() }

func (s *sidecar) Probe(ctx context.Context) (sidecarapi.ProbeResult, error) {
	p, err := s.c.Probe(ctx, &agentpb.ProbeRequest{})
	if err != nil {
		return sidecarapi.ProbeResult{}, err
	}
	r := sidecarapi.ProbeResult{Healthy: p.GetHealthy(), SystemID: p.GetSystemId(), ServerVersion: p.GetServerVersion()}
	switch p.GetRole() {
	case agentpb.Role_ROLE_PRIMARY, agentpb.Role_ROLE_STANDALONE:
		r.Role = sidecarapi.RolePrimary
	case agentpb.Role_ROLE_REPLICA:
		r.Role = sidecarapi.RoleStandby
	}
	if lag := p.GetReplicationLag(); lag != nil {
		r.Lag = lag.AsDuration()
	}
	st, err := s.c.Status(ctx, &agentpb.StatusRequest{})
	if err != nil {
		return sidecarapi.ProbeResult{}, err
	}
	r.Archiving = st.GetArchive().GetRunning()
	return r, nil
}

func (s *sidecar) Backup(ctx context.Context, req sidecarapi.BackupRequest) (sidecarapi.BackupResult, error) {
	mode := agentpb.BackupMode_BACKUP_MODE_PHYSICAL
	switch req.Mode {
	case "", "physical":
	case "logical":
		mode = agentpb.BackupMode_BACKUP_MODE_LOGICAL
	default:
		return sidecarapi.BackupResult{}, fmt.Errorf("backup mode %q: want physical or logical", req.Mode)
	}
	res, err := s.c.RunBackup(ctx, &agentpb.BackupRequest{Mode: mode, Name: req.Name, Tags: req.Tags, UploadBytesPerSecond: req.UploadBytesPerSecond}, nil)
	if err != nil {
		return sidecarapi.BackupResult{}, err
	}
	return sidecarapi.BackupResult{ID: res.GetId(), Bytes: res.GetBytesIn(), BytesAdded: res.GetBytesAdded(),
		FilesRead: res.GetFilesRead(), FilesReused: res.GetFilesReused(), BytesReused: res.GetBytesReused()}, nil
}

func (s *sidecar) StartArchiving(ctx context.Context, req sidecarapi.ArchiveRequest) error {
	_, err := s.c.StartArchiving(ctx, &agentpb.StartArchivingRequest{UploadBytesPerSecond: req.UploadBytesPerSecond})
	return err
}

func (s *sidecar) StopArchiving(ctx context.Context) error {
	_, err := s.c.StopArchiving(ctx, &agentpb.StopArchivingRequest{})
	return err
}

func (s *sidecar) Status(ctx context.Context) (sidecarapi.Status, error) {
	st, err := s.c.Status(ctx, &agentpb.StatusRequest{})
	if err != nil {
		return sidecarapi.Status{}, err
	}
	out := sidecarapi.Status{Archiving: st.GetArchive().GetRunning(), RunningBackup: st.GetBackupRunning().GetName()}
	if end := st.GetWindow().GetEnd(); end != nil {
		out.ArchivedUpTo = end.AsTime()
	}
	if start := st.GetWindow().GetStart(); start != nil {
		out.WindowStart = start.AsTime()
	}
	out.Gaps = st.GetWindow().GetGaps()
	return out, nil
}

func (s *sidecar) Freeze(ctx context.Context, req sidecarapi.FreezeRequest) (sidecarapi.Frozen, error) {
	res, err := s.c.Freeze(ctx, &agentpb.FreezeRequest{Lease: durationpb.New(req.Lease), Label: req.Label})
	if err != nil {
		return sidecarapi.Frozen{}, err
	}
	out := sidecarapi.Frozen{LeaseID: res.GetLeaseId(), Position: position(res.GetPosition())}
	if t := res.GetExpiresAt(); t != nil {
		out.ExpiresAt = t.AsTime()
	}
	if t := res.GetConsistentTime(); t != nil {
		out.ConsistentTime = t.AsTime()
	}
	return out, nil
}

func (s *sidecar) RenewLease(ctx context.Context, leaseID string, lease time.Duration) (time.Time, error) {
	res, err := s.c.RenewLease(ctx, &agentpb.RenewLeaseRequest{LeaseId: leaseID, Lease: durationpb.New(lease)})
	if err != nil {
		return time.Time{}, leaseErr(err)
	}
	return res.GetExpiresAt().AsTime(), nil
}

func (s *sidecar) Thaw(ctx context.Context, leaseID string) (sidecarapi.Thawed, error) {
	res, err := s.c.Thaw(ctx, &agentpb.ThawRequest{LeaseId: leaseID})
	if err != nil {
		return sidecarapi.Thawed{}, leaseErr(err)
	}
	out := sidecarapi.Thawed{Consistent: position(res.GetConsistent()), Metadata: res.GetMetadata()}
	if t := res.GetConsistentTime(); t != nil {
		out.ConsistentTime = t.AsTime()
	}
	for _, f := range res.GetFiles() {
		out.Files = append(out.Files, sidecarapi.File{Name: f.GetName(), Content: f.GetContent(), Mode: f.GetMode()})
	}
	return out, nil
}

func position(p *agentpb.Position) sidecarapi.Position {
	return sidecarapi.Position{Epoch: p.GetEpoch(), Offset: p.GetOffset(), Text: p.GetText()}
}

// leaseErr wraps sidecarapi.ErrLeaseExpired around the agent's
// FAILED_PRECONDITION (its answer for an expired lease) and NOT_FOUND (a
// lease it no longer knows: a restarted sidecar, whose database thawed).
func leaseErr(err error) error {
	if c := status.Code(err); c == codes.FailedPrecondition || c == codes.NotFound {
		return fmt.Errorf("%w: %s", sidecarapi.ErrLeaseExpired, status.Convert(err).Message())
	}
	return err
}

// ErrNoTLS is returned when the Dialer has no TLS source.
var ErrNoTLS = errors.New("sidecarclient: no TLS configuration")

// FromAuthority returns a TLS source that issues the controller's client
// certificate from the CA, renewing it well before it expires.
func FromAuthority(a *certs.Authority, now func() time.Time) func() (*tls.Config, error) {
	var (
		mu     sync.Mutex
		cfg    *tls.Config
		issued time.Time
	)
	return func() (*tls.Config, error) {
		if a == nil {
			return nil, ErrNoTLS
		}
		mu.Lock()
		defer mu.Unlock()
		t := now()
		if cfg == nil || t.Sub(issued) > 24*time.Hour {
			c, err := a.ClientTLS(t)
			if err != nil {
				return nil, err
			}
			cfg, issued = c, t
		}
		return cfg, nil
	}
}
