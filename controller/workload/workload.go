// Package workload captures, with each backup, the Kubernetes objects a
// StatefulSet's database needs (the StatefulSet, its Services, the
// ConfigMaps and Secrets its pods use) into the backup's repository, and
// reads them back for restores.
//
// Like controller/retention it opens the repository directly with the
// password and storage keys of a credentials Secret, read through the
// Kubernetes API and never written anywhere else; it never imports a
// plugin, the plugin host or the agent.
package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/location"
)

// KindKubernetes is the Kind of the workloads this package stores.
const KindKubernetes = "kubernetes"

// Credentials reads a repository's credentials Secret.
type Credentials struct {
	Password []byte
	getenv   func(string) string
}

// ReadCredentials reads the Secret ref in namespace ns.
func ReadCredentials(ctx context.Context, c client.Reader, ns string, ref amberv1.SecretRef) (*Credentials, error) {
	var s corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, &s); err != nil {
		return nil, fmt.Errorf("read credentials Secret %s/%s: %w", ns, ref.Name, err)
	}
	key := PasswordKey(ref)
	password := []byte(strings.TrimRight(string(s.Data[key]), "\r\n"))
	if len(password) == 0 {
		return nil, fmt.Errorf("credentials Secret %s/%s has no key %q; put the repository password there", ns, ref.Name, key)
	}
	return &Credentials{Password: password, getenv: func(name string) string { return string(s.Data[name]) }}, nil
}

// PasswordKey is the key of the password in the credentials Secret.
func PasswordKey(ref amberv1.SecretRef) string {
	if ref.PasswordKey != "" {
		return ref.PasswordKey
	}
	return "password"
}

// Open opens the repository at url with cr.
func Open(ctx context.Context, url string, cr *Credentials, clk clock.Clock, log *slog.Logger) (*repo.Repository, error) {
	if log == nil {
		log = slog.Default()
	}
	be, err := location.Open(ctx, url, location.Options{Getenv: cr.getenv, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open repository storage: %w", err)
	}
	r, err := repo.Open(ctx, be, cr.Password, repo.Options{CacheDir: "-", Clock: clock.Or(clk), Logger: log})
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrWrongPassword) {
			return nil, errors.New("open repository: the password in the credentials Secret is wrong")
		}
		return nil, fmt.Errorf("open repository: %w", err)
	}
	return r, nil
}

// Capturer stores workloads; it implements controllers.WorkloadCapturer.
type Capturer struct {
	// Client reads the workload's objects and the credentials Secret
	// (an uncached reader: Secrets and ConfigMaps are read once).
	Client client.Reader
	Clock  clock.Clock
	Logger *slog.Logger
}

// Capture stores StatefulSet ns/sts and the objects it uses into p's
// repository, tagged with backup backupID. The summary names the objects
// (kinds and names only, never contents).
func (c *Capturer) Capture(ctx context.Context, p *amberv1.BackupPolicy, sts, backupID string) (string, error) {
	id, err := repo.ParseID(backupID)
	if err != nil {
		return "", fmt.Errorf("backup id %q: %w", backupID, err)
	}
	objs, names, err := Collect(ctx, c.Client, p.Namespace, sts)
	if err != nil {
		return "", err
	}
	cr, err := ReadCredentials(ctx, c.Client, p.Namespace, p.Spec.Repository.CredentialsSecret)
	if err != nil {
		return "", err
	}
	r, err := Open(ctx, p.Spec.Repository.URL, cr, c.Clock, c.Logger)
	if err != nil {
		return "", err
	}
	defer r.Close()
	w := &repo.Workload{Backup: id, Kind: KindKubernetes, Namespace: p.Namespace, Name: sts, Engine: string(p.Spec.Engine),
		Policy: p.Name, Objects: objs}
	wid, err := r.SaveWorkload(ctx, w)
	if err != nil {
		return "", fmt.Errorf("store the workload: %w", err)
	}
	return fmt.Sprintf("workload %s stored with backup %s: %s", wid.Short(), id.Short(), strings.Join(names, ", ")), nil
}

// Collect reads StatefulSet ns/name, the Services that select its pods
// (and its governing Service), and the ConfigMaps and Secrets its pod
// template refers to. Server-set metadata is dropped. names lists them as
// Kind/name.
func Collect(ctx context.Context, c client.Reader, ns, name string) ([]json.RawMessage, []string, error) {
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
		return nil, nil, fmt.Errorf("read StatefulSet %s/%s: %w", ns, name, err)
	}
	var out []json.RawMessage
	var names []string
	add := func(kind string, o client.Object) error {
		clean(o)
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		out = append(out, b)
		names = append(names, kind+"/"+o.GetName())
		return nil
	}
	sts.APIVersion, sts.Kind = "apps/v1", "StatefulSet"
	sts.Status = appsv1.StatefulSetStatus{}
	if err := add("StatefulSet", &sts); err != nil {
		return nil, nil, err
	}
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs, client.InNamespace(ns)); err != nil {
		return nil, nil, fmt.Errorf("list Services of %s: %w", ns, err)
	}
	podLabels := labels.Set(sts.Spec.Template.Labels)
	for i := range svcs.Items {
		s := &svcs.Items[i]
		sel := s.Spec.Selector
		if s.Name != sts.Spec.ServiceName && (len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(podLabels)) {
			continue
		}
		s.APIVersion, s.Kind = "v1", "Service"
		s.Status = corev1.ServiceStatus{}
		if err := add("Service", s); err != nil {
			return nil, nil, err
		}
	}
	cms, secrets := references(&sts.Spec.Template.Spec)
	for _, n := range cms {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, &cm); apierrors.IsNotFound(err) {
			continue // an optional reference
		} else if err != nil {
			return nil, nil, fmt.Errorf("read ConfigMap %s/%s: %w", ns, n, err)
		}
		cm.APIVersion, cm.Kind = "v1", "ConfigMap"
		if err := add("ConfigMap", &cm); err != nil {
			return nil, nil, err
		}
	}
	for _, n := range secrets {
		var s corev1.Secret
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, &s); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return nil, nil, fmt.Errorf("read Secret %s/%s: %w", ns, n, err)
		}
		s.APIVersion, s.Kind = "v1", "Secret"
		if err := add("Secret", &s); err != nil {
			return nil, nil, err
		}
	}
	return out, names, nil
}

// clean drops what the API server sets.
func clean(o client.Object) {
	o.SetUID("")
	o.SetResourceVersion("")
	o.SetGeneration(0)
	o.SetCreationTimestamp(metav1.Time{})
	o.SetManagedFields(nil)
	o.SetOwnerReferences(nil)
	a := o.GetAnnotations()
	delete(a, "kubectl.kubernetes.io/last-applied-configuration")
	if len(a) == 0 {
		a = nil
	}
	o.SetAnnotations(a)
}

// references lists the ConfigMaps and Secrets a pod spec names, sorted.
func references(ps *corev1.PodSpec) (configMaps, secrets []string) {
	cm, sec := map[string]bool{}, map[string]bool{}
	for _, v := range ps.Volumes {
		if v.ConfigMap != nil {
			cm[v.ConfigMap.Name] = true
		}
		if v.Secret != nil {
			sec[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					cm[s.ConfigMap.Name] = true
				}
				if s.Secret != nil {
					sec[s.Secret.Name] = true
				}
			}
		}
	}
	for _, s := range ps.ImagePullSecrets {
		sec[s.Name] = true
	}
	all := append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...)
	for _, c := range all {
		for _, e := range c.Env {
			if f := e.ValueFrom; f != nil {
				if f.ConfigMapKeyRef != nil {
					cm[f.ConfigMapKeyRef.Name] = true
				}
				if f.SecretKeyRef != nil {
					sec[f.SecretKeyRef.Name] = true
				}
			}
		}
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil {
				cm[e.ConfigMapRef.Name] = true
			}
			if e.SecretRef != nil {
				sec[e.SecretRef.Name] = true
			}
		}
	}
	return sorted(cm), sorted(sec)
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Find opens repository spec (credentials from namespace ns) and returns
// the newest workload captured of StatefulSet sourceNS/sts and, when
// backupRef is set, that backup (a full id or unique prefix), whose own
// workload is preferred.
func (c *Capturer) Find(ctx context.Context, ns string, spec amberv1.RepositorySpec, sourceNS, sts, backupRef string) (*repo.Workload, *repo.Manifest, error) {
	cr, err := ReadCredentials(ctx, c.Client, ns, spec.CredentialsSecret)
	if err != nil {
		return nil, nil, err
	}
	r, err := Open(ctx, spec.URL, cr, c.Clock, c.Logger)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	var m *repo.Manifest
	if backupRef != "" {
		if m, err = r.FindBackup(ctx, backupRef, sourceNS+"/"+sts); err != nil {
			return nil, nil, err
		}
	}
	ws, err := r.Workloads(ctx)
	if err != nil {
		return nil, nil, err
	}
	var pick *repo.Workload
	for _, w := range ws { // oldest first: the last match is the newest
		if w.Kind != KindKubernetes || w.Namespace != sourceNS || w.Name != sts {
			continue
		}
		if m != nil && pick != nil && pick.Backup == m.ID {
			continue // keep the backup's own
		}
		pick = w
	}
	if pick == nil {
		return nil, nil, fmt.Errorf("the repository holds no workload captured of StatefulSet %s/%s (captured with each Backup since amber-controller stores workloads)", sourceNS, sts)
	}
	return pick, m, nil
}

// RecordSnapshot writes the manifest of a snapshot backup (no entries: its
// data is in VolumeSnapshots) into p's repository and returns its id; it
// implements controllers.SnapshotRecorder.
func (c *Capturer) RecordSnapshot(ctx context.Context, p *amberv1.BackupPolicy, m *repo.Manifest) (string, error) {
	if m.Mode != repo.ModeSnapshot || len(m.Entries) != 0 || len(m.Snapshots) == 0 {
		return "", errors.New("record snapshot: not a snapshot backup's manifest")
	}
	cr, err := ReadCredentials(ctx, c.Client, p.Namespace, p.Spec.Repository.CredentialsSecret)
	if err != nil {
		return "", err
	}
	r, err := Open(ctx, p.Spec.Repository.URL, cr, c.Clock, c.Logger)
	if err != nil {
		return "", err
	}
	defer r.Close()
	w, err := r.NewWriter(ctx)
	if err != nil {
		return "", err
	}
	defer w.Close()
	id, err := w.Commit(ctx, m)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}
