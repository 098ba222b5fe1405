// Command amber-plugin-mysql is Amber's MySQL and MariaDB engine plugin.
// The amber binary launches it; run by hand it explains that and exits.
package main

import (
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mysql"
)

func main() { api.Serve(mysql.New()) }
