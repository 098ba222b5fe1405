package repo

import "time"

// EngineRecord is stored in the manifest of every engine backup: where and
// when the copy is consistent, in the engine's positions, and what its
// restore needs. docs/repository-format.md, "Manifests", specifies it.
type EngineRecord struct {
	SystemID       string            `json:"system_id"`      // the database lineage
	ServerVersion  string            `json:"server_version"` // as the server reported it
	Start          LogPosition       `json:"start"`          // where the copy started
	Consistent     LogPosition       `json:"consistent"`     // replayed to here, the copy is consistent
	StartTime      time.Time         `json:"start_time"`
	ConsistentTime time.Time         `json:"consistent_time"`
	Metadata       map[string]string `json:"metadata,omitempty"` // the plugin's, passed back at restore
	Files          []EngineFile      `json:"files,omitempty"`    // small files to write beside the data
}

// LogPosition is a plugin's position: epoch and offset order it, token is
// the plugin's own exact encoding, text its human form.
type LogPosition struct {
	Epoch  uint32 `json:"epoch"`
	Offset uint64 `json:"offset"`
	Token  []byte `json:"token,omitempty"` // base64 in JSON
	Text   string `json:"text"`
}

// EngineFile is a small file a plugin returned whole (backup_label).
type EngineFile struct {
	Name    string `json:"name"`
	Content []byte `json:"content"` // base64 in JSON
	Mode    uint32 `json:"mode,omitempty"`
}

// ModeSnapshot is the Mode of a snapshot backup: its data is in volume
// snapshots outside the repository, which holds only their record.
const ModeSnapshot = "snapshot"

// VolumeSnapshot records one volume snapshot of a snapshot backup, as the
// storage system named it.
type VolumeSnapshot struct {
	// Volume is the volume's name in the pod, Claim its claim (Kubernetes:
	// the PersistentVolumeClaim).
	Volume string `json:"volume,omitempty"`
	Claim  string `json:"claim"`
	// Namespace, Name and Content name the VolumeSnapshot and its
	// VolumeSnapshotContent; Class its VolumeSnapshotClass.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Content   string `json:"content,omitempty"`
	Class     string `json:"class,omitempty"`
	// Driver is the CSI driver and Handle its id of the snapshot.
	Driver string `json:"driver,omitempty"`
	Handle string `json:"handle,omitempty"`
	// RestoreSize is the smallest volume the snapshot restores into, in
	// bytes; CreationTime when the storage system cut it.
	RestoreSize  int64     `json:"restore_size,omitempty"`
	CreationTime time.Time `json:"creation_time,omitzero"`
}
