package workload

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Labels and annotations of the objects a restore creates.
const (
	// LabelCloneOf names the StatefulSet a clone was restored from.
	LabelCloneOf = "amber.dev/clone-of"
	// LabelRestore names the Restore that created the object.
	LabelRestore = "amber.dev/restore"
	// AnnotationTarget says what the clone was restored to.
	AnnotationTarget = "amber.dev/restore-target"
	// RestoreContainer is the init container that fills the data
	// directory (physical restores), or the container that loads a
	// logical backup into the clone's server once it answers.
	RestoreContainer = "amber-restore"
	// InstallContainer is the init container that copies amber and the
	// engine's plugin into the pod for a logical restore, which runs them
	// in the database's image (where the engine's client programs are).
	InstallContainer = "amber-install"
	// CloneMarker, in the data volume, is the file a logical restore
	// writes when it is done (its report): a restarted container, or a
	// new pod on the same volume, does not restore again.
	CloneMarker = ".amber-restored"
	// CloneReportPrefix starts the line a restarted restore container
	// logs when it finds CloneMarker: the marker's content, the report of
	// the run that loaded the data. The CLI writes it as
	// job.CloneReportPrefix; the controller's tests build the log with
	// that one, which keeps the two equal without the controller
	// importing the sidecar's job package (and its plugin host).
	CloneReportPrefix = "amber-restore-report: "
	// EnvCloneOf is set in the clone's containers to the source
	// StatefulSet: a start script can tell it runs on restored data.
	EnvCloneOf = "AMBER_CLONE_OF"

	pathBin         = "/var/lib/amber/bin"
	pathStorageKeys = "/var/run/amber/storage"
	volBin          = "amber-bin"
	volStorageKeys  = "amber-storage-keys"
	volTmp          = "amber-tmp"
)

// StorageKeys are the credentials Secret's keys the clone's database
// container gets (to fetch archived log), never the repository password.
var StorageKeys = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
	"B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", "AMBER_S3_ENDPOINT"}

// CloneOptions say how to build a clone.
type CloneOptions struct {
	Name, Namespace string
	Restore         string // the Restore's name
	Image           string // amber's image
	PullPolicy      corev1.PullPolicy
	Engine          string
	RepoURL         string
	// CredentialsSecret (in Namespace) and the key of the password in it.
	CredentialsSecret, PasswordKey string
	// Target: the arguments of amber restore that name the target
	// (--backup, --to-time, --to-position); Description says it for people.
	TargetArgs  []string
	Description string
	// Logical: load a logical backup into the clone's own server once it
	// answers (a container beside it), instead of restoring the data
	// directory before it starts.
	Logical bool
	// InDatabaseImage: run that container (or, for a physical restore,
	// the init container) in the database container's image, with amber
	// and the plugin copied in by an init container, for a plugin that
	// runs the engine's programs (MySQL's mariadb and mariadb-binlog;
	// mariadb-backup and mariadbd for a physical restore); otherwise in
	// amber's image.
	InDatabaseImage bool
	// DataDir, for a physical restore: the data directory to restore
	// into, in the data volume (the source server's, recorded with the
	// backup); default the volume's mount path (PostgreSQL: PGDATA).
	DataDir string
	// Snapshots, for a physical restore of a snapshot backup: each claim
	// template's VolumeSnapshot (by the template's name, which is the
	// pod's volume name). Every claim template gets its VolumeSnapshot as
	// dataSource, and the init container runs amber restore
	// --snapshot-data on the data directory the snapshot holds instead of
	// copying the backup in.
	Snapshots map[string]SnapshotSource
}

// SnapshotSource is the VolumeSnapshot a clone's claim is restored from.
type SnapshotSource struct {
	Name string
	// RestoreSize is the smallest volume it restores into (bytes; 0:
	// unknown): a claim template asking for less asks for this much.
	RestoreSize int64
}

// Clone is what a restore creates.
type Clone struct {
	StatefulSet *appsv1.StatefulSet
	Services    []*corev1.Service
	// ConfigMaps and Secrets the workload uses, created only where missing.
	ConfigMaps []*corev1.ConfigMap
	Secrets    []*corev1.Secret
	DataDir    string
}

// BuildClone makes the clone of workload w's StatefulSet: a new name, one
// replica, new PVCs (from the same claim templates), pod labels of its
// own (so the original's Services never select it), no Amber opt-in (so
// it never archives into the original's stream), its own Services, and an
// init container that restores the data directory with amber restore
// before the database starts.
func BuildClone(w *repo.Workload, o CloneOptions) (*Clone, error) {
	out := &Clone{}
	var src *appsv1.StatefulSet
	var svcs []*corev1.Service
	for _, raw := range w.Objects {
		var tm metav1.TypeMeta
		if err := json.Unmarshal(raw, &tm); err != nil {
			return nil, fmt.Errorf("workload %s: %w", w.ID.Short(), err)
		}
		var err error
		switch tm.Kind {
		case "StatefulSet":
			src = &appsv1.StatefulSet{}
			err = json.Unmarshal(raw, src)
		case "Service":
			s := &corev1.Service{}
			err = json.Unmarshal(raw, s)
			svcs = append(svcs, s)
		case "ConfigMap":
			c := &corev1.ConfigMap{}
			err = json.Unmarshal(raw, c)
			c.Namespace = o.Namespace
			out.ConfigMaps = append(out.ConfigMaps, c)
		case "Secret":
			s := &corev1.Secret{}
			err = json.Unmarshal(raw, s)
			s.Namespace = o.Namespace
			out.Secrets = append(out.Secrets, s)
		}
		if err != nil {
			return nil, fmt.Errorf("workload %s: %s: %w", w.ID.Short(), tm.Kind, err)
		}
	}
	if src == nil {
		return nil, fmt.Errorf("workload %s holds no StatefulSet", w.ID.Short())
	}
	mark := func(m *metav1.ObjectMeta) {
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[LabelCloneOf] = src.Name
		m.Labels[LabelRestore] = o.Restore
	}
	for _, c := range out.ConfigMaps {
		mark(&c.ObjectMeta)
	}
	for _, s := range out.Secrets {
		mark(&s.ObjectMeta)
	}

	sts := &appsv1.StatefulSet{TypeMeta: src.TypeMeta, Spec: *src.Spec.DeepCopy()}
	sts.Name, sts.Namespace = o.Name, o.Namespace
	sts.Labels = copyMap(src.Labels)
	mark(&sts.ObjectMeta)
	sts.Annotations = map[string]string{AnnotationTarget: o.Description}
	sts.Spec.Replicas = ptr.To[int32](1)
	sts.Spec.ServiceName = o.Name

	// Pod labels of its own: every selector label gets the clone's name.
	sel := map[string]string{}
	if src.Spec.Selector != nil {
		for k := range src.Spec.Selector.MatchLabels {
			sel[k] = o.Name
		}
	}
	sel[LabelRestore] = o.Restore
	sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	tpl := &sts.Spec.Template
	tpl.Labels = copyMap(tpl.Labels)
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	delete(tpl.Labels, inject.LabelInject)
	for k, v := range sel {
		tpl.Labels[k] = v
	}
	tpl.Labels[LabelCloneOf] = src.Name
	ann := map[string]string{}
	for k, v := range tpl.Annotations {
		if !strings.HasPrefix(k, "amber.dev/") {
			ann[k] = v
		}
	}
	tpl.Annotations = ann
	for i := range sts.Spec.VolumeClaimTemplates {
		mark(&sts.Spec.VolumeClaimTemplates[i].ObjectMeta)
		sts.Spec.VolumeClaimTemplates[i].Status = corev1.PersistentVolumeClaimStatus{}
	}
	if o.Snapshots != nil {
		if o.Logical {
			return nil, fmt.Errorf("a clone from volume snapshots is a physical restore")
		}
		if err := fromSnapshots(sts, o.Snapshots); err != nil {
			return nil, err
		}
	}

	ps := &tpl.Spec
	dbName := src.Spec.Template.Annotations[inject.AnnotationDatabaseContainer]
	db := -1
	for i := range ps.Containers {
		if dbName == "" || ps.Containers[i].Name == dbName {
			db = i
			break
		}
	}
	if db < 0 {
		return nil, fmt.Errorf("StatefulSet %s has no database container %q", src.Name, dbName)
	}
	dataVol := src.Spec.Template.Annotations[inject.AnnotationDataVolume]
	if dataVol == "" && len(sts.Spec.VolumeClaimTemplates) > 0 {
		dataVol = sts.Spec.VolumeClaimTemplates[0].Name
	}
	mountPath := ""
	for _, m := range ps.Containers[db].VolumeMounts {
		if m.Name == dataVol && m.SubPath == "" && m.SubPathExpr == "" {
			mountPath = m.MountPath
		}
	}
	if mountPath == "" {
		return nil, fmt.Errorf("the database container %s of StatefulSet %s mounts no data volume (claim template %q)", ps.Containers[db].Name, src.Name, dataVol)
	}
	out.DataDir = mountPath
	for _, e := range ps.Containers[db].Env {
		if e.Name == "PGDATA" && e.Value != "" && o.Engine == "postgres" {
			out.DataDir = e.Value
		}
	}
	if d := path.Clean(o.DataDir); o.DataDir != "" && !o.Logical {
		if d != path.Clean(mountPath) && !strings.HasPrefix(d, path.Clean(mountPath)+"/") {
			return nil, fmt.Errorf("the backup's data directory %s is not in the data volume %q, which container %s mounts at %s; "+
				"name the volume that holds it in the annotation %s", d, dataVol, ps.Containers[db].Name, mountPath, inject.AnnotationDataVolume)
		}
		out.DataDir = d
	}

	pwKey := o.PasswordKey
	if pwKey == "" {
		pwKey = "password"
	}
	repoEnv := []corev1.EnvVar{
		{Name: "AMBER_REPO", Value: o.RepoURL},
		{Name: "AMBER_PASSWORD_FILE", Value: inject.PathRepository + "/" + pwKey},
		{Name: "AMBER_CREDENTIALS_DIR", Value: inject.PathRepository},
		{Name: "AMBER_CACHE_DIR", Value: "-"},
		{Name: "TMPDIR", Value: "/tmp"},
	}
	sc := &corev1.SecurityContext{
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	dbc := &ps.Containers[db]
	if s := dbc.SecurityContext; s != nil {
		sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = s.RunAsUser, s.RunAsGroup, s.RunAsNonRoot
	}
	var dataMounts []corev1.VolumeMount
	for _, m := range dbc.VolumeMounts {
		for _, t := range sts.Spec.VolumeClaimTemplates {
			if m.Name == t.Name {
				dataMounts = append(dataMounts, m)
			}
		}
	}
	if o.Logical {
		logicalRestore(ps, dbc, sc, repoEnv, dataMounts, mountPath, w, o)
		out.StatefulSet = sts
		cloneServices(out, svcs, src, sel, o)
		return out, nil
	}
	items := make([]corev1.KeyToPath, 0, len(StorageKeys))
	for _, k := range StorageKeys {
		items = append(items, corev1.KeyToPath{Key: k, Path: k})
	}
	ps.Volumes = append(ps.Volumes,
		corev1.Volume{Name: volBin, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: volTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: inject.VolumeRepository, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: o.CredentialsSecret, DefaultMode: ptr.To[int32](0o444)}}},
		corev1.Volume{Name: volStorageKeys, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: o.CredentialsSecret, DefaultMode: ptr.To[int32](0o444), Items: items, Optional: ptr.To(true)}}},
	)
	mounts := append(dataMounts,
		corev1.VolumeMount{Name: volBin, MountPath: pathBin},
		corev1.VolumeMount{Name: volTmp, MountPath: "/tmp"},
		corev1.VolumeMount{Name: inject.VolumeRepository, MountPath: inject.PathRepository, ReadOnly: true})
	args := []string{"restore", "--engine", o.Engine, "--data-dir", out.DataDir, "--name", w.Namespace + "/" + w.Name}
	if !o.InDatabaseImage {
		// The restored server's log fetch runs amber from there.
		args = append(args, "--install-to", pathBin)
	}
	args = append(args, "--report-file", "/dev/termination-log")
	// A restarted pod must not restore again over a server that has
	// recovered and run since: --skip-restored makes a rerun do nothing
	// (with --snapshot-data, when the data directory's marker names the
	// same backup).
	args = append(args, "--skip-restored")
	if o.Snapshots != nil {
		args = append(args, "--snapshot-data")
	}
	args = append(args, o.TargetArgs...)
	restore := corev1.Container{
		Name:                     RestoreContainer,
		Image:                    o.Image,
		ImagePullPolicy:          o.PullPolicy,
		Command:                  []string{"/usr/local/bin/amber"},
		Args:                     args,
		Env:                      repoEnv,
		VolumeMounts:             mounts,
		SecurityContext:          sc,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	first := []corev1.Container{restore}
	if o.InDatabaseImage {
		// The engine's own programs do the work (MySQL: mariadb-backup
		// --prepare, and mariadbd with mariadb-binlog to replay), so the
		// restore runs in the database's image, from the amber and plugin
		// an init container of amber's image copies in.
		install := installContainer(o, sc)
		restore.Image, restore.ImagePullPolicy = dbc.Image, dbc.ImagePullPolicy
		restore.Command = []string{pathBin + "/amber"}
		restore.Env = append(restore.Env, corev1.EnvVar{Name: "HOME", Value: "/tmp"})
		for i := range restore.VolumeMounts {
			if restore.VolumeMounts[i].Name == volBin {
				restore.VolumeMounts[i].ReadOnly = true
			}
		}
		first = []corev1.Container{install, restore}
	}
	ps.InitContainers = append(first, ps.InitContainers...)
	for i := range ps.Containers {
		c := &ps.Containers[i]
		c.Env = append(c.Env, corev1.EnvVar{Name: EnvCloneOf, Value: src.Name})
		if i == db {
			c.Env = append(c.Env, corev1.EnvVar{Name: "AMBER_CREDENTIALS_DIR", Value: pathStorageKeys})
			c.VolumeMounts = append(c.VolumeMounts,
				corev1.VolumeMount{Name: volBin, MountPath: pathBin, ReadOnly: true},
				corev1.VolumeMount{Name: volStorageKeys, MountPath: pathStorageKeys, ReadOnly: true})
		}
	}
	out.StatefulSet = sts
	cloneServices(out, svcs, src, sel, o)
	return out, nil
}

// fromSnapshots gives every claim template of sts its VolumeSnapshot as
// dataSource, asking for at least the snapshot's restore size.
func fromSnapshots(sts *appsv1.StatefulSet, snaps map[string]SnapshotSource) error {
	group := "snapshot.storage.k8s.io"
	for i := range sts.Spec.VolumeClaimTemplates {
		t := &sts.Spec.VolumeClaimTemplates[i]
		src, ok := snaps[t.Name]
		if !ok {
			return fmt.Errorf("the snapshot backup has no VolumeSnapshot of claim template %q (it snapshotted %s)", t.Name, snapshotVolumes(snaps))
		}
		t.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: src.Name}
		t.Spec.DataSourceRef = nil
		if src.RestoreSize > 0 {
			want := resource.NewQuantity(src.RestoreSize, resource.BinarySI)
			if t.Spec.Resources.Requests == nil {
				t.Spec.Resources.Requests = corev1.ResourceList{}
			}
			if have, ok := t.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || have.Cmp(*want) < 0 {
				t.Spec.Resources.Requests[corev1.ResourceStorage] = *want
			}
		}
	}
	return nil
}

func snapshotVolumes(snaps map[string]SnapshotSource) string {
	names := make([]string, 0, len(snaps))
	for k := range snaps {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return "volumes " + strings.Join(names, ", ")
}

// cloneServices adds the clone's Services to out: the workload's own,
// renamed and selecting the clone's pod, and the governing one.
func cloneServices(out *Clone, svcs []*corev1.Service, src *appsv1.StatefulSet, sel map[string]string, o CloneOptions) {
	mark := func(m *metav1.ObjectMeta) {
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[LabelCloneOf] = src.Name
		m.Labels[LabelRestore] = o.Restore
	}
	for _, s := range svcs {
		c := &corev1.Service{TypeMeta: s.TypeMeta, Spec: *s.Spec.DeepCopy()}
		switch {
		case s.Name == src.Spec.ServiceName:
			c.Name = o.Name
		case strings.HasPrefix(s.Name, src.Name):
			c.Name = o.Name + strings.TrimPrefix(s.Name, src.Name)
		default:
			c.Name = o.Name + "-" + s.Name
		}
		c.Namespace = o.Namespace
		c.Labels = copyMap(s.Labels)
		mark(&c.ObjectMeta)
		c.Spec.Selector = copyMap(sel)
		if c.Spec.ClusterIP != corev1.ClusterIPNone {
			c.Spec.ClusterIP = ""
		}
		c.Spec.ClusterIPs = nil
		for i := range c.Spec.Ports {
			c.Spec.Ports[i].NodePort = 0
		}
		c.Spec.HealthCheckNodePort = 0
		out.Services = append(out.Services, c)
	}
	if len(svcs) == 0 || !hasService(out.Services, o.Name) {
		// The governing Service the clone's serviceName names.
		out.Services = append(out.Services, &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: map[string]string{LabelCloneOf: src.Name, LabelRestore: o.Restore}},
			Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: copyMap(sel)}})
	}
}

// logicalRestore adds to the clone's pod spec ps a container beside the
// database container dbc (in the database's image, amber and the engine's
// plugin copied into an emptyDir by an init container of amber's image,
// when o.InDatabaseImage; in amber's image otherwise) that waits for the clone's server, loads the backup through the
// credentials Secret's connection string (the sidecar's, so 127.0.0.1
// reaches the pod's own server), writes the clone marker on the data
// volume and its report as its termination message, and exits; restarted
// by the kubelet, it finds the marker and only waits for a signal.
func logicalRestore(ps *corev1.PodSpec, dbc *corev1.Container, sc *corev1.SecurityContext, repoEnv []corev1.EnvVar,
	dataMounts []corev1.VolumeMount, mountPath string, w *repo.Workload, o CloneOptions) {
	ps.Volumes = append(ps.Volumes,
		corev1.Volume{Name: volTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: inject.VolumeRepository, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: o.CredentialsSecret, DefaultMode: ptr.To[int32](0o444)}}},
	)
	image, pull, exe := o.Image, o.PullPolicy, "/usr/local/bin/amber"
	var mounts []corev1.VolumeMount
	if o.InDatabaseImage {
		install := installContainer(o, sc)
		ps.InitContainers = append([]corev1.Container{install}, ps.InitContainers...)
		ps.Volumes = append(ps.Volumes, corev1.Volume{Name: volBin, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		image, pull, exe = dbc.Image, dbc.ImagePullPolicy, pathBin+"/amber"
		mounts = append(mounts, corev1.VolumeMount{Name: volBin, MountPath: pathBin, ReadOnly: true})
	}
	args := []string{"restore", "--engine", o.Engine, "--dsn-file", inject.PathRepository + "/" + inject.DSNKey,
		"--name", w.Namespace + "/" + w.Name, "--clone-marker", path.Join(mountPath, CloneMarker),
		"--report-file", "/dev/termination-log"}
	args = append(args, o.TargetArgs...)
	mounts = append(append(mounts, dataMounts...),
		corev1.VolumeMount{Name: volTmp, MountPath: "/tmp"},
		corev1.VolumeMount{Name: inject.VolumeRepository, MountPath: inject.PathRepository, ReadOnly: true})
	ps.Containers = append(ps.Containers, corev1.Container{
		Name:                     RestoreContainer,
		Image:                    image,
		ImagePullPolicy:          pull,
		Command:                  []string{exe},
		Args:                     args,
		Env:                      append(repoEnv, corev1.EnvVar{Name: "HOME", Value: "/tmp"}),
		VolumeMounts:             mounts,
		SecurityContext:          sc,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	})
	for i := range ps.Containers {
		c := &ps.Containers[i]
		if c.Name != RestoreContainer {
			c.Env = append(c.Env, corev1.EnvVar{Name: EnvCloneOf, Value: w.Name})
		}
	}
}

// installContainer is the init container that copies amber and the
// engine's plugin into the volume amber-bin, for a restore that runs them
// in the database's image.
func installContainer(o CloneOptions, sc *corev1.SecurityContext) corev1.Container {
	return corev1.Container{
		Name:                     InstallContainer,
		Image:                    o.Image,
		ImagePullPolicy:          o.PullPolicy,
		Command:                  []string{"/usr/local/bin/amber"},
		Args:                     []string{"restore", "--engine", o.Engine, "--install-to", pathBin},
		VolumeMounts:             []corev1.VolumeMount{{Name: volBin, MountPath: pathBin}},
		SecurityContext:          sc.DeepCopy(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func hasService(s []*corev1.Service, name string) bool {
	for _, x := range s {
		if x.Name == name {
			return true
		}
	}
	return false
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
