package api

import (
	"strings"
	"testing"
)

func TestCheckOptions(t *testing.T) {
	if err := CheckOptions("a logical backup", map[string]string{"workers": "2"}, "workers", "users"); err != nil {
		t.Fatal(err)
	}
	if err := CheckOptions("a replay", map[string]string{"backup.database": "x"}, BackupOptionPrefix); err != nil {
		t.Fatal(err)
	}
	if err := CheckOptions("a logical restore", map[string]string{ExportPathOption: "/p"}, ExportPathOption); err != nil {
		t.Fatal(err)
	}
	err := CheckOptions("a logical backup", map[string]string{"wokers": "2", "user": "x"}, "workers", "users")
	if err == nil || !strings.Contains(err.Error(), "unknown options user, wokers for a logical backup: it takes only users, workers") {
		t.Fatalf("err = %v", err)
	}
	err = CheckOptions("a logical dump", map[string]string{"slot": "amber"})
	if err == nil || !strings.Contains(err.Error(), "unknown option slot for a logical dump: it takes no options") {
		t.Fatalf("err = %v", err)
	}
	err = CheckOptions("a replay", map[string]string{"backupx": "1"}, BackupOptionPrefix)
	if err == nil {
		t.Fatal("backupx accepted")
	}
}
