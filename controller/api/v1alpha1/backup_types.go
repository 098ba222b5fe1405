package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where a Backup or Restore stands.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed
type Phase string

const (
	PhasePending   Phase = "Pending"
	PhaseRunning   Phase = "Running"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
)

// LocalRef names an object in the same namespace.
type LocalRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// BackupSpec asks for one backup.
type BackupSpec struct {
	// PolicyRef names the BackupPolicy the backup follows.
	PolicyRef LocalRef `json:"policyRef"`
	// StatefulSet whose database is backed up. It may be left out when
	// exactly one StatefulSet's pods carry the policy.
	// +optional
	StatefulSet string `json:"statefulSet,omitempty"`
}

// BackupStatus records what happened.
type BackupStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// TargetPod is the pod chosen to back up.
	// +optional
	TargetPod string `json:"targetPod,omitempty"`
	// StatefulSet the backup was taken of.
	// +optional
	StatefulSet string `json:"statefulSet,omitempty"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// BackupID is the backup's id in the repository.
	// +optional
	BackupID string `json:"backupID,omitempty"`
	// Bytes read from the database: the backup's size as the database
	// holds it, before deduplication and compression.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
	// BytesAdded is what the backup added to the repository: its new
	// data after deduplication, compression and encryption.
	// +optional
	BytesAdded int64 `json:"bytesAdded,omitempty"`
	// FilesRead and FilesReused count the files of a file-level physical
	// backup (the sidecar reads the data directory, annotation
	// amber.dev/data-dir): read again, and reused unchanged from the
	// previous backup without reading them; BytesReused is the size of the
	// reused ones.
	// +optional
	FilesRead int64 `json:"filesRead,omitempty"`
	// +optional
	FilesReused int64 `json:"filesReused,omitempty"`
	// +optional
	BytesReused int64 `json:"bytesReused,omitempty"`
	// Error says why the backup failed and what to do.
	// +optional
	Error string `json:"error,omitempty"`
	// Snapshots are the VolumeSnapshots of a snapshot-mode backup.
	// +optional
	Snapshots []BackupSnapshot `json:"snapshots,omitempty"`
	// Conditions: Complete, Pruned; for snapshot mode also Thawed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BackupSnapshot is one VolumeSnapshot a snapshot-mode backup took.
type BackupSnapshot struct {
	// PersistentVolumeClaim snapshotted.
	PersistentVolumeClaim string `json:"persistentVolumeClaim"`
	// VolumeSnapshot made of it, in the Backup's namespace.
	VolumeSnapshot string `json:"volumeSnapshot"`
	// VolumeSnapshotContent bound to it.
	// +optional
	VolumeSnapshotContent string `json:"volumeSnapshotContent,omitempty"`
	// ReadyToUse as the VolumeSnapshot last reported.
	// +optional
	ReadyToUse bool `json:"readyToUse,omitempty"`
}

// Backup is one backup of one StatefulSet's database.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=amber
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.policyRef.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.targetPod`
// +kubebuilder:printcolumn:name="Backup ID",type=string,JSONPath=`.status.backupID`,priority=1
// +kubebuilder:printcolumn:name="Bytes",type=integer,JSONPath=`.status.bytes`,priority=1
// +kubebuilder:printcolumn:name="Added",type=integer,JSONPath=`.status.bytesAdded`,priority=1
// +kubebuilder:printcolumn:name="Finished",type=date,JSONPath=`.status.finishedAt`
type Backup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackupSpec   `json:"spec,omitempty"`
	Status BackupStatus `json:"status,omitempty"`
}

// BackupList is a list of Backup.
//
// +kubebuilder:object:root=true
type BackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Backup `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Backup{}, &BackupList{})
}
