// Package agentpb is the agent API, amber.agent.v1: agent.proto, its
// generated Go code (committed) and a small client helper. The controller
// imports this package alone to call the agent in each database pod.
//
// agentpb is a leaf: it imports gRPC, protobuf and the standard library,
// and nothing of Amber's, so the controller never links the data plane.
package agentpb
