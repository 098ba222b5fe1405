package agentpb

// The generated code beside agent.proto is committed, so building never
// needs protoc. After editing agent.proto, regenerate with protoc,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.5.1 on PATH:
//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto
