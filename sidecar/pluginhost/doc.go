// Package pluginhost finds, launches and talks to engine plugins
// (amber-plugin-<engine> binaries) through hashicorp/go-plugin. It owns
// plugin discovery (AMBER_PLUGIN_DIR, then the directory of the amber
// binary), protocol version negotiation, relaying the plugins' JSON stderr
// logs into amber's log/slog, restarting a plugin that died, and the
// environment a plugin starts with: an allowlist that never carries the
// host's credentials (see childEnvAllowed in env.go).
//
// Callers get an api.Engine: the plugin contract itself lives in
// plugins/api. pluginhost knows nothing about storage or the repository
// format; it must never import sidecar/storage, sidecar/repo or
// sidecar/archive.
package pluginhost
