package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// NotImplementedMessage is what a Restore's Ready condition says.
const NotImplementedMessage = "restoring into a clone StatefulSet is not implemented yet in amber-controller; nothing was created. " +
	"Restore with the CLI instead: `amber restore` with the same repository and backup id or --to time"

// RestoreReconciler validates Restores and says honestly that restoring
// into clone StatefulSets is not implemented yet.
type RestoreReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Clock    clock.Clock
}

func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&amberv1.Restore{}).Named("restore").Complete(r)
}

func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var rs amberv1.Restore
	if err := r.Client.Get(ctx, req.NamespacedName, &rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if rs.Status.Phase == amberv1.PhaseFailed || rs.Status.Phase == amberv1.PhaseSucceeded {
		return ctrl.Result{}, nil
	}
	orig := rs.DeepCopy()
	cond := metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "NotImplemented", Message: NotImplementedMessage}
	if ref := rs.Spec.PolicyRef; ref != nil {
		var p amberv1.BackupPolicy
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: ref.Name}, &p)
		if apierrors.IsNotFound(err) {
			cond = metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "PolicyNotFound",
				Message: fmt.Sprintf("BackupPolicy %q does not exist in namespace %s", ref.Name, rs.Namespace)}
		} else if err != nil {
			return ctrl.Result{}, err
		}
	} else if rs.Spec.Engine == "" {
		cond = metav1.Condition{Type: CondReady, Status: metav1.ConditionFalse, Reason: "Invalid",
			Message: "spec.engine is required with spec.repository"}
	}
	rs.Status.Phase = amberv1.PhaseFailed
	setCondition(r.Recorder, &rs, &rs.Status.Conditions, cond, r.Clock)
	if err := r.Client.Status().Patch(ctx, &rs, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("update Restore status: %w", err)
	}
	return ctrl.Result{}, nil
}
