package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// Resource names of amber.dev/v1alpha1.
const (
	resBackups  = "backups"
	resPolicies = "backuppolicies"
	resRestores = "restores"
)

// conn is a connection to one cluster's amber.dev/v1alpha1 API.
type conn struct {
	rc   *rest.RESTClient
	ns   string // -n, else the context's namespace
	host string
	prog string
}

// connect reads the kubeconfig (or the in-cluster configuration) and
// returns a client for amber.dev/v1alpha1. The scheme holds only those
// types: client-go's full scheme would cost every amber run its start-up.
func (g *globals) connect() (*conn, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	over := &clientcmd.ConfigOverrides{CurrentContext: g.context}
	if g.namespace != "" {
		over.Context.Namespace = g.namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, over)
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no kubeconfig found: pass --kubeconfig, set $KUBECONFIG or create ~/.kube/config (inside a pod, the pod's service account is used)")
		}
		return nil, fmt.Errorf("read the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("read the namespace from the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := amberv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/apis"
	cfg.GroupVersion = &amberv1.GroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "amber-k8s"
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for the Kubernetes API: %w", err)
	}
	return &conn{rc: rc, ns: ns, host: cfg.Host, prog: g.prog}, nil
}

// get reads one object of resource in the connection's namespace.
func (c *conn) get(ctx context.Context, resource, name string, into runtime.Object) error {
	err := c.rc.Get().Namespace(c.ns).Resource(resource).Name(name).Do(ctx).Into(into)
	return c.explain(ctx, err, "get", resource, name, false)
}

// list lists resource in the connection's namespace, or in every
// namespace with all.
func (c *conn) list(ctx context.Context, resource string, all bool, into runtime.Object) error {
	req := c.rc.Get().Resource(resource)
	if !all {
		req = req.Namespace(c.ns)
	}
	return c.explain(ctx, req.Do(ctx).Into(into), "list", resource, "", all)
}

func (c *conn) create(ctx context.Context, resource string, obj, into runtime.Object) error {
	err := c.rc.Post().Namespace(c.ns).Resource(resource).Body(obj).Do(ctx).Into(into)
	name := ""
	if m, ok := obj.(metav1.Object); ok {
		name = m.GetName()
	}
	return c.explain(ctx, err, "create", resource, name, false)
}

// watchOne watches the object name of resource from resourceVersion on.
func (c *conn) watchOne(ctx context.Context, resource, name, resourceVersion string) (watch.Interface, error) {
	w, err := c.rc.Get().Namespace(c.ns).Resource(resource).
		Param("watch", "true").
		Param("fieldSelector", "metadata.name="+name).
		Param("resourceVersion", resourceVersion).
		Param("allowWatchBookmarks", "false").
		Watch(ctx)
	return w, c.explain(ctx, err, "watch", resource, name, false)
}

// explain turns an API error into one that says what to do; all means the
// request was for every namespace.
func (c *conn) explain(ctx context.Context, err error, verb, resource, name string, all bool) error {
	if err == nil {
		return nil
	}
	where := "namespace " + c.ns
	if all {
		where = "any namespace"
	}
	switch {
	case apierrors.IsNotFound(err):
		if served, known := c.serves(ctx, resource); known && !served {
			return fmt.Errorf("the Kubernetes API at %s has no %s.%s: install the CRDs: kubectl apply -f controller/config/crd/",
				c.host, resource, amberv1.GroupVersion.Group)
		}
		if name != "" && resource == resPolicies {
			return fmt.Errorf("BackupPolicy %q not found in %s (list the policies with `%s status -A`)", name, where, c.prog)
		}
		if name != "" && resource == resBackups {
			return fmt.Errorf("Backup %q not found in %s", name, where)
		}
		if name != "" && resource == resRestores {
			return fmt.Errorf("Restore %q not found in %s", name, where)
		}
		return err
	case apierrors.IsAlreadyExists(err) && resource == resRestores:
		return fmt.Errorf("a Restore named %s exists in %s already: choose another --name, or delete the old one with `kubectl delete restore %s -n %s` (its clone stays)",
			name, where, name, c.ns)
	case apierrors.IsForbidden(err):
		scope := "-n " + c.ns
		if all {
			scope = "-A"
		}
		return fmt.Errorf("%w; ask a cluster administrator for permission to %s %s.%s (check with `kubectl auth can-i %s %s.%s %s`)",
			err, verb, resource, amberv1.GroupVersion.Group, verb, resource, amberv1.GroupVersion.Group, scope)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the Kubernetes API at %s rejected the kubeconfig's credentials (%w): log in again or choose another --context", c.host, err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s %s.%s at %s: %w (check --kubeconfig and --context, and that the cluster is up)",
		verb, resource, amberv1.GroupVersion.Group, c.host, err)
}

// serves reports whether the API serves resource in amber.dev/v1alpha1;
// known is false when that could not be found out.
func (c *conn) serves(ctx context.Context, resource string) (served, known bool) {
	raw, err := c.rc.Get().AbsPath("/apis", amberv1.GroupVersion.Group, amberv1.GroupVersion.Version).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return false, true
	}
	if err != nil {
		return false, false
	}
	var list metav1.APIResourceList
	if json.Unmarshal(raw, &list) != nil {
		return false, false
	}
	for _, r := range list.APIResources {
		if r.Name == resource {
			return true, true
		}
	}
	return false, true
}

// follow reads and watches the object name of resource until finished says
// it has finished, passing each state it sees to seen (from this goroutine
// only). Its deletion is the error gone.
func follow[T any, P interface {
	*T
	runtime.Object
	GetResourceVersion() string
}](ctx context.Context, c *conn, resource, name string, finished func(P) bool, seen func(P), gone string) (P, error) {
	for {
		obj := P(new(T))
		if err := c.get(ctx, resource, name, obj); err != nil {
			return nil, err
		}
		seen(obj)
		if finished(obj) {
			return obj, nil
		}
		w, err := c.watchOne(ctx, resource, name, obj.GetResourceVersion())
		if err != nil {
			return nil, err
		}
		done, err := drain(ctx, w, finished, seen, gone)
		w.Stop()
		if err != nil || done != nil {
			return done, err
		}
		// The watch ended (the server closes them, or the version is too
		// old): read the object again and watch from there.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// drain reads w until the object has finished (returned), was deleted (the
// error gone) or the watch ends (nil, nil).
func drain[P runtime.Object](ctx context.Context, w watch.Interface, finished func(P) bool, seen func(P), gone string) (P, error) {
	var none P
	for {
		select {
		case <-ctx.Done():
			return none, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return none, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				obj, ok := ev.Object.(P)
				if !ok {
					continue
				}
				seen(obj)
				if finished(obj) {
					return obj, nil
				}
			case watch.Deleted:
				return none, errors.New(gone)
			case watch.Error:
				return none, nil
			}
		}
	}
}
