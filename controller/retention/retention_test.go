package retention

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// secretReader serves one Secret, as the API would.
type secretReader struct{ s *corev1.Secret }

func (r secretReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if key.Name != r.s.Name || key.Namespace != r.s.Namespace {
		return fmt.Errorf("secret %s not found", key)
	}
	*obj.(*corev1.Secret) = *r.s.DeepCopy()
	return nil
}

func (secretReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not supported")
}

// TestPruneKeepsLast: three backups in a real local repository, keepLast
// 1: prune forgets the two older ones and the repository lists one.
func TestPruneKeepsLast(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be, err := file.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r, err := repo.Init(ctx, be, []byte("pw"), repo.Options{CacheDir: "-", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := job.StreamBackup(ctx, r, "db", nil, strings.NewReader(fmt.Sprintf("backup %d", i)), clk, nil); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Hour)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"password": []byte("pw\n")}}
	p := &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: amberv1.BackupPolicySpec{
		Repository: amberv1.RepositorySpec{URL: "file://" + dir, CredentialsSecret: amberv1.SecretRef{Name: "creds"}},
		Retention:  amberv1.RetentionSpec{KeepLast: 1},
	}}
	pr := &Pruner{Client: secretReader{secret}, Clock: clk}
	summary, forgotten, err := pr.Prune(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(summary, "kept 1 backup(s), forgot 2") || len(forgotten) != 0 {
		t.Fatalf("summary %q, forgotten snapshot backups %d (want none: stream backups)", summary, len(forgotten))
	}
	r2, err := repo.Open(ctx, be, []byte("pw"), repo.Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	all, err := r2.Backups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("%d backups left, want 1", len(all))
	}

	secret.Data["password"] = []byte("wrong")
	if _, _, err := pr.Prune(ctx, p); err == nil || !strings.Contains(err.Error(), "password in Secret ns/creds key \"password\" is wrong") {
		t.Fatalf("wrong password: %v", err)
	}
	delete(secret.Data, "password")
	if _, _, err := pr.Prune(ctx, p); err == nil || !strings.Contains(err.Error(), "has no key") {
		t.Fatalf("missing password: %v", err)
	}
}

// TestPruneReturnsForgottenSnapshots: two snapshot backups of one
// database, keepLast 1: prune forgets the older and returns its manifest,
// with the VolumeSnapshots it recorded, for the controller to delete.
func TestPruneReturnsForgottenSnapshots(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be, err := file.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r, err := repo.Init(ctx, be, []byte("pw"), repo.Options{CacheDir: "-", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 2 {
		w, err := r.NewWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := clk.Now()
		m := &repo.Manifest{Name: "shop/pg", Host: "pg-0", Engine: "postgres", Mode: repo.ModeSnapshot, Start: start,
			Entries: []repo.Entry{}, Position: "1/0/C8", ConsistentTime: start,
			Record:    &repo.EngineRecord{SystemID: "7301", Consistent: repo.LogPosition{Epoch: 1, Offset: 200, Text: "1/0/C8"}, ConsistentTime: start},
			Tags:      map[string]string{"namespace": "shop", "backup": fmt.Sprintf("b%d", i)},
			Snapshots: []repo.VolumeSnapshot{{Volume: "data", Claim: "data-pg-0", Namespace: "shop", Name: fmt.Sprintf("b%d-data", i)}}}
		id, err := w.Commit(ctx, m)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.String())
		clk.Advance(time.Hour)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "creds"}, Data: map[string][]byte{"password": []byte("pw")}}
	p := &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "snap"}, Spec: amberv1.BackupPolicySpec{
		Repository: amberv1.RepositorySpec{URL: "file://" + dir, CredentialsSecret: amberv1.SecretRef{Name: "creds"}},
		Retention:  amberv1.RetentionSpec{KeepLast: 1},
	}}
	_, forgotten, err := (&Pruner{Client: secretReader{secret}, Clock: clk}).Prune(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(forgotten) != 1 || forgotten[0].ID.String() != ids[0] || len(forgotten[0].Snapshots) != 1 || forgotten[0].Snapshots[0].Name != "b0-data" {
		t.Fatalf("forgotten: %+v", forgotten)
	}
}
