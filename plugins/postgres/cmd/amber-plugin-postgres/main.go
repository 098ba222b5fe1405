// Command amber-plugin-postgres is Amber's PostgreSQL engine plugin. The
// amber binary launches it; run by hand it explains that and exits.
package main

import (
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/postgres"
)

func main() { api.Serve(postgres.New()) }
