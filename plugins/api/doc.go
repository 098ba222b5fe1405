// Package api is the contract between Amber and its engine plugins
// (amber-plugin-postgres, amber-plugin-mysql, amber-plugin-mongodb).
//
// It owns three things:
//   - the versioned gRPC protocol, amber.plugin.v1, in amber/plugin/v1
//     (plugin.proto and its generated code, committed);
//   - the Go interface Engine that plugin authors implement, in which
//     streams are plain callbacks, readers and writers, so an engine never
//     touches gRPC; and Serve, which a plugin's main calls;
//   - Client, the host's implementation of Engine over gRPC.
//
// Plugins know databases and nothing about storage: this package and the
// plugins that use it must never import anything under sidecar/ or
// controller/. docs/plugin-protocol.md describes the protocol and how each
// engine maps onto it.
package api
