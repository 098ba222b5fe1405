package k8stest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/amber-backup/amber/conformance/testbed"
)

// Fake nodes and pods with kwok (sigs.k8s.io/kwok, built into .deps/bin by
// conformance/tools/kube/build.sh): kwok plays the kubelet of the nodes
// that carry KwokNodeAnnotation, marking them Ready and the pods bound to
// them Running with a pod IP, without running any container. Tests with
// hundreds of StatefulSets use it; tests that need real containers use
// the test bed's real kubelet (conformance/testbed).
const (
	// KwokNodeAnnotation (with the value "fake") marks a node kwok manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// KwokPodCIDR is where kwok takes the fake pods' IPs from: loopback,
	// so an address a test might dial never leaves the machine. No real
	// process listens there unless a test starts one.
	KwokPodCIDR = "127.20.0.0/16"
	kwokNodeIP  = "127.0.0.9"
)

// KwokStages is the file next to the kwok binary holding the stages it
// plays (a bare kwok has none): build.sh writes kwokctl's defaults there.
const KwokStages = "kwok-stages.yaml"

// KwokPath returns the kwok binary, which has KwokStages next to it, or ""
// and why not.
func KwokPath() (string, string) {
	dirs := []string{filepath.Join(testbed.DepsDir(), "bin")}
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, "kwok")
		if st, err := os.Stat(filepath.Join(d, KwokStages)); isExec(p) && err == nil && st.Size() > 0 {
			return p, ""
		}
	}
	return "", "kwok and " + KwokStages + " not found in " + filepath.Join(testbed.DepsDir(), "bin") + " (conformance/tools/kube/build.sh builds them)"
}

// Kwok is a running kwok process.
type Kwok struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
	err  error
}

// StartKwok runs kwok against the cluster of kubeconfig, managing the
// nodes annotated KwokNodeAnnotation=fake, playing the stages next to bin.
// dir holds its home directory (kwok also reads $HOME/.kwok/kwok.yaml, so
// none of the user's applies). The caller stops it.
func StartKwok(bin, kubeconfig, dir string) (*Kwok, error) {
	home := filepath.Join(dir, "kwok-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--config="+filepath.Join(filepath.Dir(bin), KwokStages),
		"--kubeconfig="+kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		"--cidr="+KwokPodCIDR,
		"--node-ip="+kwokNodeIP,
		"--server-address=127.0.0.1:0",
	)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	k := &Kwok{cmd: cmd, done: make(chan struct{}), log: &bytes.Buffer{}}
	cmd.Stdout = &lockedWriter{w: k.log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kwok: %w", err)
	}
	go func() {
		k.err = cmd.Wait()
		close(k.done)
	}()
	return k, nil
}

// Exited reports whether kwok has stopped, and why.
func (k *Kwok) Exited() (bool, error) {
	select {
	case <-k.done:
		return true, k.err
	default:
		return false, nil
	}
}

// LogTail returns the end of kwok's output.
func (k *Kwok) LogTail() string {
	lw := k.cmd.Stdout.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	b := k.log.Bytes()
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop ends kwok: SIGTERM, then SIGKILL after 10 s.
func (k *Kwok) Stop() error {
	if exited, _ := k.Exited(); exited {
		return nil
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
	var ee *exec.ExitError
	if k.err != nil && !errors.As(k.err, &ee) {
		return k.err
	}
	return nil
}

// KwokNode is a Node that kwok manages, with room for pods (kwok admits
// whatever is bound to it; the scheduler, if one runs, reads capacity).
func KwokNode(name string) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("10000"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake"},
			Labels:      map[string]string{"kubernetes.io/hostname": name, "type": "kwok"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
}

// lockedWriter lets kwok's output be read while it is written.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
