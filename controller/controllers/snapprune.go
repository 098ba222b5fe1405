package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/sidecar/repo"
)

// AnnotationForgotten marks a VolumeSnapshot whose snapshot backup
// retention forgot (the value is the backup's id) while a Restore or a
// claim still used it: a later prune of its policy deletes it once
// nothing does.
const AnnotationForgotten = "amber.dev/forgotten-backup"

// pruneSnapshots deletes the VolumeSnapshots of the snapshot backups
// retention forgot: only those a record names that this controller created
// for policy p (labels amber.dev/policy and amber.dev/backup match the
// record), and never one a Restore that has not finished, or a claim not
// yet bound, uses; those are marked AnnotationForgotten and deleted by a
// later prune. It returns a summary for the Pruned condition, "" when
// there was nothing to do.
func (r *BackupReconciler) pruneSnapshots(ctx context.Context, p *amberv1.BackupPolicy, forgotten []*repo.Manifest) string {
	var deleted, kept, foreign []string
	handle := func(vs *unstructured.Unstructured, id string) {
		ref := vs.GetNamespace() + "/" + vs.GetName()
		if user := r.snapshotUser(ctx, vs.GetNamespace(), vs.GetName(), id); user != "" {
			if vs.GetAnnotations()[AnnotationForgotten] != id {
				patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, AnnotationForgotten, id))
				if err := r.Client.Patch(ctx, vs, patch); err != nil {
					r.log().Warn("mark a VolumeSnapshot of a forgotten backup", "volumesnapshot", ref, "error", err)
				}
			}
			kept = append(kept, ref+" (used by "+user+")")
			return
		}
		if err := deleteSnapshot(ctx, r.Client, vs.GetNamespace(), vs.GetName()); err != nil {
			r.log().Warn("delete the VolumeSnapshot of a forgotten backup; delete it by hand", "volumesnapshot", ref, "error", err)
			kept = append(kept, ref+" (delete failed: "+err.Error()+")")
			return
		}
		deleted = append(deleted, ref)
	}
	for _, m := range forgotten {
		for _, s := range m.Snapshots {
			ns := s.Namespace
			if ns == "" {
				ns = m.Tags["namespace"]
			}
			vs := &unstructured.Unstructured{}
			vs.SetGroupVersionKind(GVKVolumeSnapshot)
			err := r.reader().Get(ctx, types.NamespacedName{Namespace: ns, Name: s.Name}, vs)
			if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
				continue
			} else if err != nil {
				kept = append(kept, ns+"/"+s.Name+" (read failed: "+err.Error()+")")
				continue
			}
			l := vs.GetLabels()
			if ns != p.Namespace || l[LabelPolicy] != p.Name || l[LabelBackup] == "" || l[LabelBackup] != m.Tags["backup"] {
				foreign = append(foreign, ns+"/"+s.Name)
				continue
			}
			handle(vs, m.ID.String())
		}
	}
	// Those an earlier prune kept for a Restore or a claim that is done now.
	var l unstructured.UnstructuredList
	l.SetGroupVersionKind(GVKVolumeSnapshot.GroupVersion().WithKind("VolumeSnapshotList"))
	if err := r.reader().List(ctx, &l, client.InNamespace(p.Namespace), client.MatchingLabels{LabelPolicy: p.Name}); err == nil {
		for i := range l.Items {
			vs := &l.Items[i]
			id := vs.GetAnnotations()[AnnotationForgotten]
			if id == "" || vs.GetLabels()[LabelBackup] == "" || slicesContains(deleted, kept, vs.GetNamespace()+"/"+vs.GetName()) {
				continue
			}
			handle(vs, id)
		}
	} else if !meta.IsNoMatchError(err) {
		r.log().Warn("list VolumeSnapshots kept by an earlier prune", "namespace", p.Namespace, "error", err)
	}
	var parts []string
	if len(deleted) > 0 {
		sort.Strings(deleted)
		parts = append(parts, "deleted VolumeSnapshots "+strings.Join(deleted, ", "))
	}
	if len(kept) > 0 {
		sort.Strings(kept)
		parts = append(parts, "kept VolumeSnapshots "+strings.Join(kept, ", ")+": a later prune deletes them")
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		parts = append(parts, "left VolumeSnapshots "+strings.Join(foreign, ", ")+" (not created by this policy's Backups)")
	}
	return strings.Join(parts, "; ")
}

func slicesContains(a, b []string, s string) bool {
	for _, l := range [][]string{a, b} {
		for _, x := range l {
			if x == s || strings.HasPrefix(x, s+" (") {
				return true
			}
		}
	}
	return false
}

// snapshotUser names what still needs VolumeSnapshot ns/name of backup id:
// a Restore that has not finished and restores that backup, or a claim
// restored from it that is not bound yet; "" when nothing does. When it
// cannot tell, it says so (and the snapshot is kept).
func (r *BackupReconciler) snapshotUser(ctx context.Context, ns, name, id string) string {
	var rl amberv1.RestoreList
	if err := r.reader().List(ctx, &rl, client.InNamespace(ns)); err != nil {
		return "unknown Restores (list failed: " + err.Error() + ")"
	}
	for _, rs := range rl.Items {
		if rs.Status.Phase == amberv1.PhaseSucceeded || rs.Status.Phase == amberv1.PhaseFailed {
			continue
		}
		if rs.Status.BackupID == id || (rs.Status.BackupID == "" && rs.Spec.BackupID != "" && strings.HasPrefix(id, rs.Spec.BackupID)) {
			return "Restore " + rs.Name
		}
	}
	var cl corev1.PersistentVolumeClaimList
	if err := r.reader().List(ctx, &cl, client.InNamespace(ns)); err != nil {
		return "unknown claims (list failed: " + err.Error() + ")"
	}
	for _, c := range cl.Items {
		if c.Status.Phase == corev1.ClaimBound {
			continue
		}
		for _, ds := range []*corev1.TypedLocalObjectReference{c.Spec.DataSource, typedRef(c.Spec.DataSourceRef)} {
			if ds != nil && ds.Kind == "VolumeSnapshot" && ds.Name == name {
				return "claim " + c.Name
			}
		}
	}
	return ""
}

func typedRef(r *corev1.TypedObjectReference) *corev1.TypedLocalObjectReference {
	if r == nil || (r.Namespace != nil && *r.Namespace != "") {
		return nil
	}
	return &corev1.TypedLocalObjectReference{APIGroup: r.APIGroup, Kind: r.Kind, Name: r.Name}
}
