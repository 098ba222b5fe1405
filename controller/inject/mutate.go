package inject

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/utils/ptr"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/certs"
)

// Config is how the sidecar is built; it comes from the controller's flags.
type Config struct {
	Image           string
	ImagePullPolicy corev1.PullPolicy
	Resources       corev1.ResourceRequirements
	// APIPort is the port of the sidecar's mTLS API.
	APIPort int32
	// NativeSidecar injects an init container with restartPolicy Always
	// (Kubernetes 1.29+) instead of a regular container.
	NativeSidecar bool
}

// DefaultAPIPort is the sidecar API's port unless configured.
const DefaultAPIPort = 7443

// NativeSidecarSupported reports whether a server of version v runs
// native sidecars (on by default since Kubernetes 1.29).
func NativeSidecarSupported(v *version.Info) bool {
	if v == nil {
		return false
	}
	major, err := strconv.Atoi(strings.TrimSuffix(v.Major, "+"))
	if err != nil {
		return false
	}
	minor, err := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if err != nil {
		return false
	}
	return major > 1 || (major == 1 && minor >= 29)
}

// Problem is why a pod that asked for injection was admitted unchanged.
type Problem struct {
	Reason  string // Event reason, CamelCase
	Message string
}

func (p *Problem) Error() string { return p.Message }

func problemf(reason, format string, args ...any) *Problem {
	return &Problem{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Injected reports whether pod already has the sidecar.
func Injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == SidecarName {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == SidecarName {
			return true
		}
	}
	return false
}

// PolicyName returns the pod's amber.dev/policy annotation, checked; ok is
// false when the pod does not carry it.
func PolicyName(pod *corev1.Pod) (name string, ok bool, p *Problem) {
	name, ok = pod.Annotations[AnnotationPolicy]
	if !ok {
		return "", false, nil
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", true, problemf("MalformedAnnotation", "annotation %s=%q is not a BackupPolicy name (%s); set it to the name of a BackupPolicy in namespace %s",
			AnnotationPolicy, name, strings.Join(errs, "; "), pod.Namespace)
	}
	return name, true, nil
}

// Mutate adds the sidecar for policy to pod (in place). secretName is the
// Secret with the pod's sidecar certificate; namespace is the pod's.
// It changes nothing and returns a Problem when the pod's annotations do
// not allow injection.
func Mutate(pod *corev1.Pod, namespace string, policy *amberv1.BackupPolicy, tlsSecret string, cfg Config) *Problem {
	if Injected(pod) {
		return nil
	}
	db, p := databaseContainer(pod)
	if p != nil {
		return p
	}
	dataMount, dataDir, p := dataDirMount(pod, db, policy)
	if p != nil {
		return p
	}
	var data, dataPath string
	if dataMount == nil {
		if data, dataPath, p = dataVolume(pod, db); p != nil {
			return p
		}
	}
	port := cfg.APIPort
	if port == 0 {
		port = DefaultAPIPort
	}
	passwordKey := policy.Spec.Repository.CredentialsSecret.PasswordKey
	if passwordKey == "" {
		passwordKey = "password"
	}
	mode := policy.Spec.Mode
	if mode == "" {
		mode = amberv1.ModePhysical
	}
	c := corev1.Container{
		Name:            SidecarName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{"amber", "sidecar"},
		Env: []corev1.EnvVar{
			{Name: "AMBER_POLICY", Value: policy.Name},
			{Name: "AMBER_ENGINE", Value: string(policy.Spec.Engine)},
			{Name: "AMBER_MODE", Value: string(mode)},
			{Name: "AMBER_REPO", Value: policy.Spec.Repository.URL},
			{Name: "AMBER_PASSWORD_FILE", Value: PathRepository + "/" + passwordKey},
			{Name: "AMBER_CREDENTIALS_DIR", Value: PathRepository},
			{Name: "AMBER_TLS_DIR", Value: PathTLS},
			{Name: "AMBER_TLS_CERT", Value: PathTLS + "/tls.crt"},
			{Name: "AMBER_TLS_KEY", Value: PathTLS + "/tls.key"},
			{Name: "AMBER_TLS_CA", Value: PathTLS + "/ca.crt"},
			{Name: "AMBER_ALLOWED_CLIENTS", Value: certs.ControllerClientName},
			{Name: "AMBER_DSN_FILE", Value: PathRepository + "/" + DSNKey},
			{Name: "AMBER_CACHE_DIR", Value: PathCache},
			{Name: "AMBER_LISTEN", Value: fmt.Sprintf(":%d", port)},
			{Name: "AMBER_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "AMBER_POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		Ports:     []corev1.ContainerPort{{Name: "amber-api", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Resources: *cfg.Resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeRepository, MountPath: PathRepository, ReadOnly: true},
			{Name: VolumeTLS, MountPath: PathTLS, ReadOnly: true},
			{Name: VolumeCache, MountPath: PathCache},
			{Name: VolumeTmp, MountPath: PathTmp},
		},
		SecurityContext: securityContext(pod, db),
	}
	if comp := policy.Spec.Compression; comp != "" {
		// Unset leaves amber's own default, so a pod of a policy without
		// the field runs exactly as the CLI does.
		c.Env = append(c.Env, corev1.EnvVar{Name: "AMBER_COMPRESSION", Value: string(comp)})
	}
	switch {
	case dataMount != nil:
		c.Env = append(c.Env, corev1.EnvVar{Name: "AMBER_DATA_DIR", Value: dataDir})
		c.VolumeMounts = append(c.VolumeMounts, *dataMount)
	case data != "":
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: data, MountPath: dataPath, ReadOnly: true})
	}
	// Readable by any user: the sidecar runs as the database's user, and
	// only the sidecar container mounts these volumes.
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: VolumeRepository, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: policy.Spec.Repository.CredentialsSecret.Name, DefaultMode: ptr.To[int32](0o444)}}},
		corev1.Volume{Name: VolumeTLS, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: tlsSecret, DefaultMode: ptr.To[int32](0o444)}}},
		corev1.Volume{Name: VolumeCache, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: VolumeTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	)
	if cfg.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, c)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, c)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationInjected] = cfg.Image
	pod.Annotations[AnnotationIdentity] = certs.SidecarIdentity(namespace, pod.Name)
	return nil
}

func databaseContainer(pod *corev1.Pod) (*corev1.Container, *Problem) {
	if len(pod.Spec.Containers) == 0 {
		return nil, problemf("NoContainer", "the pod has no container to back up")
	}
	name, ok := pod.Annotations[AnnotationDatabaseContainer]
	if !ok {
		return &pod.Spec.Containers[0], nil
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], nil
		}
	}
	return nil, problemf("MalformedAnnotation", "annotation %s=%q names no container of the pod; name the database container", AnnotationDatabaseContainer, name)
}

// dataVolume finds the database's data volume and where the database
// container mounts it; the sidecar mounts it at the same path, so paths
// the engine reports (a data directory, a tablespace) are valid in both.
// No volume found is not a problem: logical backups need none.
func dataVolume(pod *corev1.Pod, db *corev1.Container) (name, path string, p *Problem) {
	name, explicit := pod.Annotations[AnnotationDataVolume]
	if explicit {
		found := false
		for _, v := range pod.Spec.Volumes {
			if v.Name == name {
				found = true
			}
		}
		if !found {
			return "", "", problemf("MalformedAnnotation", "annotation %s=%q names no volume of the pod; name the volume holding the database's data", AnnotationDataVolume, name)
		}
	} else {
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil || v.Ephemeral != nil {
				name = v.Name
				break
			}
		}
		if name == "" {
			return "", "", nil
		}
	}
	for _, m := range db.VolumeMounts {
		if m.Name == name && m.SubPath == "" && m.SubPathExpr == "" {
			return name, m.MountPath, nil
		}
	}
	return name, PathDataDefault, nil
}

// dataDirMount checks the data directory, from the amber.dev/data-dir
// annotation or else the policy's spec.dataDir, and returns the sidecar's
// read-only copy of the database container's mount that holds it (the
// deepest one), with the cleaned path; nil with neither.
func dataDirMount(pod *corev1.Pod, db *corev1.Container, policy *amberv1.BackupPolicy) (*corev1.VolumeMount, string, *Problem) {
	dir, ok := pod.Annotations[AnnotationDataDir]
	bad := func(why string, args ...any) *Problem {
		return problemf("MalformedAnnotation", "annotation %s=%q %s", AnnotationDataDir, dir, fmt.Sprintf(why, args...))
	}
	if !ok {
		if dir = policy.Spec.DataDir; dir == "" {
			return nil, "", nil
		}
		bad = func(why string, args ...any) *Problem {
			return problemf("PolicyDataDir", "BackupPolicy %s's spec.dataDir %q %s; set annotation %s on the pod's template to override it",
				policy.Name, dir, fmt.Sprintf(why, args...), AnnotationDataDir)
		}
	}
	if !path.IsAbs(dir) || strings.ContainsAny(dir, "\x00\n") || slices.Contains(strings.Split(dir, "/"), "..") {
		return nil, "", bad("is not an absolute path (without .. or control characters); give the database's data directory as the database container %s sees it, e.g. /var/lib/postgresql/data/pgdata", db.Name)
	}
	dir = path.Clean(dir)
	var m *corev1.VolumeMount
	for i := range db.VolumeMounts {
		v := &db.VolumeMounts[i]
		mp := path.Clean(v.MountPath)
		if (dir == mp || mp == "/" || strings.HasPrefix(dir, mp+"/")) && (m == nil || len(mp) > len(path.Clean(m.MountPath))) {
			m = v
		}
	}
	if m != nil {
		for _, own := range []string{PathRepository, PathTLS, PathCache, PathTmp} {
			if path.Clean(m.MountPath) == own {
				return nil, "", bad("is on the volume container %s mounts at %s, where the sidecar mounts its own; mount the data volume elsewhere", db.Name, own)
			}
		}
	}
	if m == nil {
		return nil, "", bad("is on none of the volumes container %s mounts; give a path on the database's data volume (the sidecar can read only what a volume shares)", db.Name)
	}
	if want, ok := pod.Annotations[AnnotationDataVolume]; ok && want != m.Name {
		return nil, "", bad("is on volume %q, but annotation %s names volume %q; remove one or make them agree", m.Name, AnnotationDataVolume, want)
	}
	return &corev1.VolumeMount{Name: m.Name, MountPath: m.MountPath, SubPath: m.SubPath, SubPathExpr: m.SubPathExpr, ReadOnly: true}, dir, nil
}

// Warnings are what an injected pod may still lack: the webhook admits it
// injected and records each as a Warning Event and an admission warning.
func Warnings(pod *corev1.Pod) []*Problem {
	var c *corev1.Container
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == SidecarName {
				c = &cs[i]
			}
		}
	}
	if c == nil {
		return nil
	}
	var out []*Problem
	for _, e := range c.Env {
		if e.Name == "AMBER_DATA_DIR" && (c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil) {
			out = append(out, problemf("DataDirUser", "the data directory %s (annotation %s, or the BackupPolicy's spec.dataDir) asks for backups that read it, but neither the database container nor the pod sets securityContext.runAsUser, so the sidecar runs as its image's user and cannot read a data directory private to the database's user; set runAsUser (and runAsGroup) to the database's user, or physical backups fail naming the directory",
				e.Value, AnnotationDataDir))
		}
	}
	return out
}

// securityContext runs the sidecar as the database's user, so it can read
// the data files: never root unless the database itself runs as root
// explicitly, read-only root filesystem, no privilege escalation, no
// capabilities.
func securityContext(pod *corev1.Pod, db *corev1.Container) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	var uid, gid *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if csc := db.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			uid = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			gid = csc.RunAsGroup
		}
	}
	if uid != nil {
		sc.RunAsUser = ptr.To(*uid)
	}
	if gid != nil {
		sc.RunAsGroup = ptr.To(*gid)
	}
	// All three engines run as an unprivileged user; only a database
	// that is told to run as root gets a root sidecar beside it.
	sc.RunAsNonRoot = ptr.To(uid == nil || *uid != 0)
	return sc
}
