// Package k8stest starts a real etcd and kube-apiserver for the
// controller's tests (controller-runtime's envtest), with the CRDs
// installed. The binaries come from the test bed: .deps/bin (testbed's
// DepsDir) first, then $KUBEBUILDER_ASSETS; without them the test skips
// through testbed.Skip (a failure under AMBER_TEST_REQUIRE_ALL=1).
package k8stest

import (
	"os"
	"path/filepath"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/amber-backup/amber/conformance/testbed"
)

// AssetsDir returns the directory holding kube-apiserver and etcd, or ""
// and why not.
func AssetsDir() (string, string) {
	dirs := []string{filepath.Join(testbed.DepsDir(), "bin")}
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "kube-apiserver")) && isExec(filepath.Join(d, "etcd")) {
			return d, ""
		}
	}
	return "", "kube-apiserver and etcd not found in " + filepath.Join(testbed.DepsDir(), "bin") + " or $KUBEBUILDER_ASSETS"
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// CRDDir is controller/config/crd.
func CRDDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "config", "crd")
}

// Start starts etcd and kube-apiserver from assets with the CRDs and the
// given webhook configurations installed. The caller stops it.
func Start(assets string, webhooks envtest.WebhookInstallOptions) (*envtest.Environment, *rest.Config, error) {
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{CRDDir()},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: webhooks,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, err
	}
	return env, cfg, nil
}
