package inject

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Names of the webhook configurations the controller patches its CA into.
const (
	MutatingConfigName   = "amber-sidecar-injector"
	ValidatingConfigName = "amber-validation"
	// ValidatePolicyPath serves the BackupPolicy validator.
	ValidatePolicyPath = "/validate-amber-dev-v1alpha1-backuppolicy"
)

// MutatingWebhookConfiguration is the pod injector's registration:
// failurePolicy Ignore (a webhook that is down never blocks a pod), only
// pods labelled amber.dev/inject=true are sent to it, never pods in
// kube-system, only on CREATE. client says where the webhook server is
// (a Service in a cluster, a URL in tests); its caBundle is patched in by
// the controller.
func MutatingWebhookConfiguration(client admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: MutatingConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar.amber.dev",
			ClientConfig:            client,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			TimeoutSeconds:          ptr.To[int32](5),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{LabelInject: "true"}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"},
			}}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
		}},
	}
}

// ValidatingWebhookConfiguration registers the BackupPolicy validator
// (it parses schedules, which the CRD's pattern checks only in shape).
// failurePolicy Ignore: the API server's own CRD validation (patterns, CEL)
// runs whether or not a controller answers; the webhook adds only the cron
// range check, and a policy admitted while no controller runs is checked
// again by the controller, which sets Ready=False (BadSchedule) and never
// schedules it. So a policy can be created in the same pass as the
// controller that will answer for it (a first helm install).
func ValidatingWebhookConfiguration(client admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: ValidatingConfigName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "backuppolicy.amber.dev",
			ClientConfig:            client,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			TimeoutSeconds:          ptr.To[int32](5),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{"amber.dev"}, APIVersions: []string{"v1alpha1"},
					Resources: []string{"backuppolicies"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
		}},
	}
}
