// Command testplugin serves apitest.Fake as a plugin, for the tests of the
// plugin contract and of the host. Installed as amber-plugin-fake it speaks
// protocol version 1. Installed under any other amber-plugin-<name> it
// offers only version 99, which no host knows, to test version
// negotiation.
package main

import (
	"os"
	"path/filepath"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/apitest"
	"github.com/hashicorp/go-plugin"
)

func main() {
	e := apitest.NewFake()
	if filepath.Base(os.Args[0]) == "amber-plugin-fake" {
		api.Serve(e)
		return
	}
	cfg := api.ServeConfig(e)
	cfg.VersionedPlugins = map[int]plugin.PluginSet{99: cfg.VersionedPlugins[api.ProtocolVersion]}
	plugin.Serve(cfg)
}
