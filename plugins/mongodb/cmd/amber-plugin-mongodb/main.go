// Command amber-plugin-mongodb is Amber's MongoDB engine plugin.
// The amber binary launches it; run by hand it explains that and exits.
package main

import (
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mongodb"
)

func main() { api.Serve(mongodb.New()) }
