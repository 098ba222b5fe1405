// Package sidecardouble is a TEST DOUBLE of the sidecar API: a
// sidecarapi.Dialer whose sidecars answer from a script the test sets
// (role, lag, health, backup results) and record every call. It stands in
// for the agent's gRPC API (sidecar/agent/agentpb) in the controller's
// tests only until that API exists; tests that can run real sidecars
// should use them instead. Nothing outside _test.go files may import it.
package sidecardouble

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/amber-backup/amber/controller/sidecarapi"
)

// Pod is the scripted state of one pod's sidecar.
type Pod struct {
	Probe     sidecarapi.ProbeResult
	ProbeErr  error
	BackupErr error
	// BackupBytes and BackupBytesAdded are what a backup reports read
	// and added to the repository.
	BackupBytes, BackupBytesAdded int64
	// Status is what Status returns (Archiving comes from Probe).
	Status sidecarapi.Status
	// FreezeErr and ThawErr fail Freeze and Thaw; Thawed is what a
	// successful Thaw returns.
	FreezeErr error
	ThawErr   error
	Thawed    sidecarapi.Thawed
	// Frozen reports whether a freeze is held now (Freeze sets it, Thaw
	// clears it).
	Frozen bool
}

// Call is one recorded call.
type Call struct {
	Pod    string // namespace/name
	Method string // Dial, Probe, Backup, StartArchiving, StopArchiving, Status, Freeze, RenewLease, Thaw
	Backup sidecarapi.BackupRequest
	Freeze sidecarapi.FreezeRequest
}

// Dialer is the test double. The zero value is not usable; use New.
type Dialer struct {
	mu    sync.Mutex
	pods  map[string]*Pod
	calls []Call
	seq   int
}

// New returns a Dialer with no pods: dialing any pod fails until Set.
func New() *Dialer { return &Dialer{pods: map[string]*Pod{}} }

var _ sidecarapi.Dialer = (*Dialer)(nil)

// Set scripts the sidecar of pod, named "namespace/name".
func (d *Dialer) Set(pod string, p Pod) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cp := p
	d.pods[pod] = &cp
}

// Calls returns the calls so far, optionally only those of method.
func (d *Dialer) Calls(method string) []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Call
	for _, c := range d.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Archiving returns the pods whose sidecars archive now.
func (d *Dialer) Archiving() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for name, p := range d.pods {
		if p.Probe.Archiving {
			out = append(out, name)
		}
	}
	return out
}

// ErrNoSidecar is returned when dialing a pod that was never Set.
var ErrNoSidecar = errors.New("sidecardouble: no sidecar scripted for this pod")

func (d *Dialer) Dial(_ context.Context, pod *corev1.Pod) (sidecarapi.Sidecar, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := pod.Namespace + "/" + pod.Name
	if _, ok := d.pods[key]; !ok {
		return nil, fmt.Errorf("dial %s: %w", key, ErrNoSidecar)
	}
	d.calls = append(d.calls, Call{Pod: key, Method: "Dial"})
	return &sidecar{d: d, pod: key}, nil
}

type sidecar struct {
	d   *Dialer
	pod string
}

func (s *sidecar) record(c Call) *Pod {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	c.Pod = s.pod
	s.d.calls = append(s.d.calls, c)
	return s.d.pods[s.pod]
}

func (s *sidecar) Probe(context.Context) (sidecarapi.ProbeResult, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "Probe"})
	p := s.d.pods[s.pod]
	return p.Probe, p.ProbeErr
}

func (s *sidecar) Backup(_ context.Context, req sidecarapi.BackupRequest) (sidecarapi.BackupResult, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "Backup", Backup: req})
	p := s.d.pods[s.pod]
	if p.BackupErr != nil {
		return sidecarapi.BackupResult{}, p.BackupErr
	}
	s.d.seq++
	return sidecarapi.BackupResult{ID: fmt.Sprintf("%s-backup-%d", s.pod, s.d.seq), Bytes: p.BackupBytes, BytesAdded: p.BackupBytesAdded}, nil
}

func (s *sidecar) StartArchiving(context.Context, sidecarapi.ArchiveRequest) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "StartArchiving"})
	s.d.pods[s.pod].Probe.Archiving = true
	return nil
}

func (s *sidecar) StopArchiving(context.Context) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "StopArchiving"})
	s.d.pods[s.pod].Probe.Archiving = false
	return nil
}

func (s *sidecar) Status(context.Context) (sidecarapi.Status, error) {
	p := s.record(Call{Method: "Status"})
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	st := p.Status
	st.Archiving = p.Probe.Archiving
	return st, nil
}

func (s *sidecar) Freeze(_ context.Context, req sidecarapi.FreezeRequest) (sidecarapi.Frozen, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "Freeze", Freeze: req})
	p := s.d.pods[s.pod]
	if p.FreezeErr != nil {
		return sidecarapi.Frozen{}, p.FreezeErr
	}
	p.Frozen = true
	s.d.seq++
	return sidecarapi.Frozen{LeaseID: fmt.Sprintf("lease-%d", s.d.seq), ExpiresAt: time.Now().Add(req.Lease),
		Position: sidecarapi.Position{Epoch: 1, Offset: 100, Text: "1/0/64"}}, nil
}

func (s *sidecar) RenewLease(_ context.Context, _ string, lease time.Duration) (time.Time, error) {
	s.record(Call{Method: "RenewLease"})
	return time.Now().Add(lease), nil
}

func (s *sidecar) Thaw(context.Context, string) (sidecarapi.Thawed, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls = append(s.d.calls, Call{Pod: s.pod, Method: "Thaw"})
	p := s.d.pods[s.pod]
	p.Frozen = false
	if p.ThawErr != nil {
		return sidecarapi.Thawed{}, p.ThawErr
	}
	return p.Thawed, nil
}

// Frozen reports whether pod's sidecar holds a freeze now.
func (d *Dialer) Frozen(pod string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pods[pod]
	return p != nil && p.Frozen
}

func (s *sidecar) Close() error { return nil }
