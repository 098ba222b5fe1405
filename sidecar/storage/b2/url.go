package b2

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// FromURL reads b2://bucket/prefix[?lock-days=N&lock-mode=governance|compliance&purge=true].
// Keys come from getenv: B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY;
// AMBER_B2_API_URL points the client at another B2-API server (tests).
// purge=true makes removal delete every version instead of hiding the name
// (see Config.Purge). Errors name the parameter and what it accepts.
func FromURL(u *url.URL, getenv func(string) string) (Config, error) {
	if u.Host == "" {
		return Config{}, fmt.Errorf("repository URL %q has no bucket; use b2://bucket/prefix", u.Redacted())
	}
	keyID, key := getenv("B2_APPLICATION_KEY_ID"), getenv("B2_APPLICATION_KEY")
	if keyID == "" || key == "" {
		return Config{}, fmt.Errorf("b2:// repositories need B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY in the environment")
	}
	cfg := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), KeyID: keyID, Key: Secret(key),
		APIBase: getenv("AMBER_B2_API_URL")}
	q := u.Query()
	if v := q.Get("lock-days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return Config{}, fmt.Errorf("repository URL parameter lock-days=%q is not a positive number of days", v)
		}
		cfg.LockDays = n
		switch mode := q.Get("lock-mode"); mode {
		case "", "governance":
			cfg.LockMode = Governance
		case "compliance":
			cfg.LockMode = Compliance
		default:
			return Config{}, fmt.Errorf("repository URL parameter lock-mode=%q: use governance or compliance", mode)
		}
	}
	if v := q.Get("purge"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("repository URL parameter purge=%q is not true or false", v)
		}
		cfg.Purge = b
	}
	return cfg, nil
}
