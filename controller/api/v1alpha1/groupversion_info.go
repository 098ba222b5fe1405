// Package v1alpha1 holds Amber's Kubernetes API types (group amber.dev):
// BackupPolicy, Backup and Restore. The deepcopy functions and the CRD YAML
// (controller/config/crd) are generated from these files by controller-gen;
// run conformance/tools/controllergen/generate.sh after changing them.
//
// +kubebuilder:object:generate=true
// +groupName=amber.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is amber.dev/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "amber.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
