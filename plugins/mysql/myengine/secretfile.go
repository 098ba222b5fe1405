package myengine

import (
	"strings"

	"github.com/amber-backup/amber/plugins/internal/secretfile"
)

// SecretFilePath is where a child finds the secret file passed as its
// first exec.Cmd.ExtraFiles entry (secretfile.New).
const SecretFilePath = secretfile.Path

// secretFile is secretfile.New.
var secretFile = secretfile.New

// clientOptions is the [client] option group connecting to d.
func clientOptions(d DSN) ([]byte, error) {
	cfg, err := d.Config()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	b.WriteString("user=" + optQuote(cfg.User) + "\n")
	b.WriteString("password=" + optQuote(cfg.Passwd) + "\n")
	if cfg.Net == "unix" {
		b.WriteString("socket=" + optQuote(cfg.Addr) + "\n")
	} else {
		host, port, ok := strings.Cut(cfg.Addr, ":")
		if !ok {
			port = "3306"
		}
		b.WriteString("host=" + optQuote(host) + "\nport=" + port + "\nprotocol=TCP\n")
	}
	return []byte(b.String()), nil
}
