package kubectl

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// TestDescribePending: `--wait`'s progress line says why a Backup waits
// for a replica, and only blames the controller when nothing says.
func TestDescribePending(t *testing.T) {
	b := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "b1"}}
	if got := describe(b, 40*time.Second); !strings.Contains(got, "is amber-controller running?") {
		t.Errorf("untouched Backup after 40 s: %q", got)
	}
	b.Status.Phase = amberv1.PhasePending
	b.Status.Conditions = []metav1.Condition{{Type: condScheduled, Status: metav1.ConditionFalse, Reason: "WaitingForReplica",
		Message: "StatefulSet pg: pg-0: unhealthy"}}
	got := describe(b, 40*time.Second)
	if !strings.Contains(got, "waiting for a replica: StatefulSet pg: pg-0: unhealthy") || strings.Contains(got, "amber-controller running") {
		t.Errorf("waiting Backup: %q", got)
	}
}
