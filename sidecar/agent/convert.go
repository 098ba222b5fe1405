package agent

import (
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ts is t on the wire; nil for the zero time.
func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// posPB is p on the wire; nil for the zero position. The plugin's token
// stays in the agent: callers compare (epoch, offset) and show text.
func posPB(p api.Position) *agentpb.Position {
	if p.IsZero() {
		return nil
	}
	return &agentpb.Position{Epoch: p.Epoch, Offset: p.Offset, Text: p.Text}
}

func rolePB(r api.Role) agentpb.Role {
	switch r {
	case api.RolePrimary:
		return agentpb.Role_ROLE_PRIMARY
	case api.RoleReplica:
		return agentpb.Role_ROLE_REPLICA
	case api.RoleStandalone:
		return agentpb.Role_ROLE_STANDALONE
	}
	return agentpb.Role_ROLE_UNSPECIFIED
}
