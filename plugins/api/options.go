package api

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// BackupOptionPrefix starts the ReplayRequest options through which the
// host passes the backup's metadata ("backup.<key>"); CheckOptions lets
// them through when it is among the known names.
const BackupOptionPrefix = "backup."

// OptionReplayCheck, set to "true" by the host on a ReplayRequest, asks
// Replay to walk the archived log from From to To and report where it
// would stop, applying nothing and touching no target: it fails when the
// target cannot be reached from From. The host asks it before a restore
// writes anything, for targets it cannot check itself (a transaction). An
// engine that takes it must never apply log when it is set.
const OptionReplayCheck = "replay.check"

// CheckOptions refuses an option the engine does not read for this call
// (a misspelt --option would otherwise be ignored without a word), naming
// the options it takes. known lists the option names; a name ending in "."
// (BackupOptionPrefix) admits every option that starts with it.
func CheckOptions(call string, opts map[string]string, known ...string) error {
	var unknown []string
	for k := range opts {
		if !slices.ContainsFunc(known, func(n string) bool {
			return n == k || strings.HasSuffix(n, ".") && strings.HasPrefix(k, n)
		}) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	takes := "no options"
	var names []string
	for _, n := range known {
		if n != ExportPathOption && n != BackupOptionPrefix && n != OptionSnapshotData && n != OptionReplayCheck { // the host's own
			names = append(names, n)
		}
	}
	if len(names) > 0 {
		sort.Strings(names)
		takes = "only " + strings.Join(names, ", ")
	}
	word := "option"
	if len(unknown) > 1 {
		word = "options"
	}
	return fmt.Errorf("unknown %s %s for %s: it takes %s (see the engine's page in docs/engines)",
		word, strings.Join(unknown, ", "), call, takes)
}
