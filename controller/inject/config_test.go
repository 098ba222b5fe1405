package inject

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite controller/config/webhook/manifests.yaml")

// TestWebhookManifests keeps controller/config/webhook/manifests.yaml (the
// webhook configurations for a Service amber-controller in namespace
// amber, for the Helm chart to template) equal to what the code builds.
// Run `go test ./controller/inject -run TestWebhookManifests -update`
// after changing the configurations.
func TestWebhookManifests(t *testing.T) {
	svc := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: "amber", Name: "amber-controller", Path: ptr.To(path), Port: ptr.To[int32](443)}}
	}
	var out bytes.Buffer
	out.WriteString("# Generated from controller/inject/config.go by TestWebhookManifests; do not edit.\n")
	out.WriteString("# The controller patches its CA into caBundle at start.\n")
	for _, obj := range []any{MutatingWebhookConfiguration(svc(Path)), ValidatingWebhookConfiguration(svc(ValidatePolicyPath))} {
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	path := filepath.Join("..", "config", "webhook", "manifests.yaml")
	if *update {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; run with -update", err)
	}
	if !bytes.Equal(have, out.Bytes()) {
		t.Fatalf("%s is out of date; run `go test ./controller/inject -run TestWebhookManifests -update`", path)
	}
}
