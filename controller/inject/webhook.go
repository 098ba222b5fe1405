package inject

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// Path is where the webhook server serves the pod injector.
const Path = "/mutate-v1-pod"

// Injector is the pod webhook.
type Injector struct {
	// Client writes sidecar certificate Secrets.
	Client client.Client
	// Reader reads BackupPolicies; nil: Client. A live reader (not a
	// cache) sees a policy created a moment before its pods.
	Reader    client.Reader
	Recorder  record.EventRecorder
	Authority *certs.Authority
	Config    Config
	// Clock dates certificates; they are checked by others against the
	// wall clock, so it is clock.Real outside unit tests.
	Clock  clock.Clock
	Logger *slog.Logger
}

var _ admission.Handler = (*Injector)(nil)

func (in *Injector) log() *slog.Logger {
	if in.Logger != nil {
		return in.Logger
	}
	return slog.Default()
}

// Handle admits every pod; it patches in the sidecar when the pod asks for
// it and everything it needs is there.
func (in *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		// A pod the webhook cannot read is not the webhook's to refuse.
		in.log().Warn("admit unreadable pod unchanged", "namespace", req.Namespace, "err", err)
		return admission.Allowed("amber: pod not readable; not injected")
	}
	ns := req.Namespace
	if pod.Namespace == "" {
		pod.Namespace = ns
	}
	policyName, asked, p := PolicyName(&pod)
	if !asked {
		return admission.Allowed("amber: no " + AnnotationPolicy + " annotation")
	}
	if Injected(&pod) {
		return admission.Allowed("amber: already injected")
	}
	if p == nil && pod.Name == "" {
		p = problemf("NoPodName", "the pod has no fixed name (it uses generateName); amber injects only into pods with a name, such as a StatefulSet's, since each sidecar gets a certificate for its pod")
	}
	if p != nil {
		return in.unchanged(&pod, p)
	}
	var policy amberv1.BackupPolicy
	reader := in.Reader
	if reader == nil {
		reader = in.Client
	}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: policyName}, &policy); err != nil {
		if apierrors.IsNotFound(err) {
			return in.unchanged(&pod, problemf("UnknownPolicy", "BackupPolicy %q named by annotation %s does not exist in namespace %s; create it or fix the annotation, then recreate the pod", policyName, AnnotationPolicy, ns))
		}
		return in.unchanged(&pod, problemf("PolicyUnreadable", "read BackupPolicy %s/%s: %v; the pod runs without a sidecar until it is recreated", ns, policyName, err))
	}
	mutated := pod.DeepCopy()
	tlsSecret := certs.SidecarSecretName(pod.Name)
	if p := Mutate(mutated, ns, &policy, tlsSecret, in.Config); p != nil {
		return in.unchanged(&pod, p)
	}
	if req.DryRun == nil || !*req.DryRun {
		if _, err := in.Authority.EnsureSidecarSecret(ctx, in.Client, ns, pod.Name, clock.Or(in.Clock).Now()); err != nil {
			return in.unchanged(&pod, problemf("CertificateFailed", "issue the sidecar certificate: %v; the pod runs without a sidecar until it is recreated", err))
		}
	}
	raw, err := json.Marshal(mutated)
	if err != nil {
		return in.unchanged(&pod, problemf("PatchFailed", "encode the injected pod: %v", err))
	}
	in.log().Info("injected sidecar", "namespace", ns, "pod", pod.Name, "policy", policyName)
	resp := admission.PatchResponseFromRaw(req.Object.Raw, raw)
	for _, w := range Warnings(mutated) {
		in.log().Warn("injected sidecar with a warning", "namespace", ns, "pod", pod.Name, "reason", w.Reason, "problem", w.Message)
		in.event(&pod, w.Reason, "amber sidecar injected, but: "+w.Message)
		resp.Warnings = append(resp.Warnings, "amber: "+w.Message)
	}
	return resp
}

// unchanged admits pod as it is and records a Warning Event on it.
func (in *Injector) unchanged(pod *corev1.Pod, p *Problem) admission.Response {
	in.log().Warn("admit pod without sidecar", "namespace", pod.Namespace, "pod", pod.Name, "reason", p.Reason, "problem", p.Message)
	in.event(pod, p.Reason, "amber sidecar not injected: "+p.Message)
	return admission.Allowed("amber: not injected: " + p.Message)
}

// event records a Warning Event on pod and on its controller.
func (in *Injector) event(pod *corev1.Pod, reason, msg string) {
	if in.Recorder == nil {
		return
	}
	// The pod has no UID yet; the Event names it by namespace and name.
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name}
	if ref.Name == "" {
		ref.Name = pod.GenerateName
	}
	in.Recorder.Event(ref, corev1.EventTypeWarning, reason, msg)
	// Tools that match Events by UID (kubectl describe pod) cannot find
	// one recorded before the pod exists; its owner, such as the
	// StatefulSet, has a UID already and gets the Event too.
	if owner := metav1.GetControllerOf(pod); owner != nil {
		oref := &corev1.ObjectReference{Kind: owner.Kind, APIVersion: owner.APIVersion, Namespace: pod.Namespace, Name: owner.Name, UID: owner.UID}
		in.Recorder.Eventf(oref, corev1.EventTypeWarning, reason, "pod %s: %s", ref.Name, msg)
	}
}

// Webhook returns the injector as a webhook to register on a server at Path.
func (in *Injector) Webhook() *admission.Webhook {
	return &admission.Webhook{Handler: in}
}

// ErrNoAuthority is returned when an Injector has no CA.
var ErrNoAuthority = errors.New("inject: no certificate authority")

// Check reports an Injector that cannot work.
func (in *Injector) Check() error {
	if in.Authority == nil {
		return ErrNoAuthority
	}
	if in.Client == nil {
		return errors.New("inject: no client")
	}
	return nil
}
