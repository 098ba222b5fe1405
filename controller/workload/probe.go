package workload

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// PostgresProber runs a drill's SQL probe on a clone's PostgreSQL, with
// the connection string of the policy's credentials Secret (key "dsn",
// the one the sidecar uses) pointed at the clone pod's address.
type PostgresProber struct {
	Client client.Reader
}

// Probe implements controllers.Prober.
func (pp *PostgresProber) Probe(ctx context.Context, p *amberv1.BackupPolicy, pod *corev1.Pod, query string) error {
	if p.Spec.Engine != amberv1.EnginePostgres {
		return fmt.Errorf("probes run on PostgreSQL only, not %s", p.Spec.Engine)
	}
	if pod.Status.PodIP == "" {
		return errors.New("the clone's pod has no address yet")
	}
	var s corev1.Secret
	ref := p.Spec.Repository.CredentialsSecret
	if err := pp.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, &s); err != nil {
		return fmt.Errorf("read credentials Secret %s: %w", ref.Name, err)
	}
	dsn := strings.TrimSpace(string(s.Data["dsn"]))
	if dsn == "" {
		return fmt.Errorf("credentials Secret %s has no key \"dsn\" to connect to the clone with", ref.Name)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parser's message may quote the connection string.
		return fmt.Errorf("the \"dsn\" in credentials Secret %s is not a PostgreSQL connection string", ref.Name)
	}
	cfg.Host = pod.Status.PodIP
	cfg.Fallbacks = nil
	cfg.ConnectTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to the clone: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("the clone: %w", err)
	}
	if inRecovery {
		return errors.New("the clone is still in recovery")
	}
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if n == 0 {
		return errors.New("probe returned no row")
	}
	return nil
}
