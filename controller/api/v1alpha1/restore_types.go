package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RestoreSpec asks for a StatefulSet's database to be restored into a
// clone StatefulSet, at a backup or at a point in time.
//
// +kubebuilder:validation:XValidation:rule="has(self.policyRef) != has(self.repository)",message="give exactly one of policyRef and repository"
// +kubebuilder:validation:XValidation:rule="has(self.backupID) != has(self.pointInTime)",message="give exactly one of backupID and pointInTime"
type RestoreSpec struct {
	// PolicyRef names the BackupPolicy whose repository holds the backup.
	// +optional
	PolicyRef *LocalRef `json:"policyRef,omitempty"`
	// Repository names the repository directly (for a cluster that has
	// only the bucket and the key).
	// +optional
	Repository *RepositorySpec `json:"repository,omitempty"`
	// Engine of the database (required with repository).
	// +optional
	Engine Engine `json:"engine,omitempty"`
	// SourceStatefulSet is the StatefulSet the backup was taken of.
	// +kubebuilder:validation:MinLength=1
	SourceStatefulSet string `json:"sourceStatefulSet"`
	// BackupID restores this backup.
	// +kubebuilder:validation:MinLength=1
	// +optional
	BackupID string `json:"backupID,omitempty"`
	// PointInTime restores the state at this time (needs archived log).
	// +optional
	PointInTime *metav1.Time `json:"pointInTime,omitempty"`
	// CloneName names the clone StatefulSet; default <source>-restore-<restore name>.
	// +optional
	CloneName string `json:"cloneName,omitempty"`
}

// RestoreStatus records what happened.
type RestoreStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Conditions: Ready says whether the clone exists and why not.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Restore is a request to restore a database into a clone StatefulSet.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=amber
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.sourceStatefulSet`
// +kubebuilder:printcolumn:name="Backup ID",type=string,JSONPath=`.spec.backupID`
// +kubebuilder:printcolumn:name="Point In Time",type=string,JSONPath=`.spec.pointInTime`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
type Restore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RestoreSpec   `json:"spec,omitempty"`
	Status RestoreStatus `json:"status,omitempty"`
}

// RestoreList is a list of Restore.
//
// +kubebuilder:object:root=true
type RestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Restore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Restore{}, &RestoreList{})
}
