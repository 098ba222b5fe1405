package inject

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// ScheduleParser parses BackupPolicy schedules: five fields or a
// descriptor (@daily, @every 6h), as robfig/cron's standard parser.
var ScheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule checks a schedule, with a message that says what is wrong.
func ParseSchedule(s string) (cron.Schedule, error) {
	sched, err := ScheduleParser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v; use five cron fields (minute hour day-of-month month day-of-week, e.g. \"30 2 * * *\") or @daily, @hourly, @every 6h", s, err)
	}
	return sched, nil
}

// PolicyValidator refuses BackupPolicies whose schedule does not parse.
type PolicyValidator struct{}

var _ admission.CustomValidator = PolicyValidator{}

func (PolicyValidator) ValidateCreate(_ context.Context, obj runtime.Object) (admission.Warnings, error) {
	return validatePolicy(obj)
}

func (PolicyValidator) ValidateUpdate(_ context.Context, _, obj runtime.Object) (admission.Warnings, error) {
	return validatePolicy(obj)
}

func (PolicyValidator) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

func validatePolicy(obj runtime.Object) (admission.Warnings, error) {
	p, ok := obj.(*amberv1.BackupPolicy)
	if !ok {
		return nil, fmt.Errorf("expected a BackupPolicy, got %T", obj)
	}
	if p.Spec.Schedule != "" {
		if _, err := ParseSchedule(p.Spec.Schedule); err != nil {
			return nil, err
		}
	}
	if d := p.Spec.DataDir; d != "" {
		if err := checkDataDir(d); err != nil {
			return nil, fmt.Errorf("spec.dataDir %q %v", d, err)
		}
	}
	return nil, nil
}

// checkDataDir says what is wrong with a data directory given by the
// annotation or a policy: it must be absolute and clean, without control
// characters.
func checkDataDir(dir string) error {
	if !path.IsAbs(dir) || strings.ContainsFunc(dir, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return errors.New("is not an absolute path (or holds control characters); give the database's data directory as the database container sees it, e.g. /var/lib/postgresql/data/pgdata")
	}
	if c := path.Clean(dir); c != dir {
		return fmt.Errorf("is not a clean path; write %s", c)
	}
	return nil
}

// PolicyValidatorWebhook returns the validator as a webhook to register at
// ValidatePolicyPath.
func PolicyValidatorWebhook(scheme *runtime.Scheme) *admission.Webhook {
	return admission.WithCustomValidator(scheme, &amberv1.BackupPolicy{}, PolicyValidator{})
}
