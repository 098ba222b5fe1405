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
