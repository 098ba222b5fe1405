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
	summary, err := pr.Prune(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(summary, "kept 1 backup(s), forgot 2") {
		t.Fatalf("summary %q", summary)
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
	if _, err := pr.Prune(ctx, p); err == nil || !strings.Contains(err.Error(), "password in Secret ns/creds key \"password\" is wrong") {
		t.Fatalf("wrong password: %v", err)
	}
	delete(secret.Data, "password")
	if _, err := pr.Prune(ctx, p); err == nil || !strings.Contains(err.Error(), "has no key") {
		t.Fatalf("missing password: %v", err)
	}
}
