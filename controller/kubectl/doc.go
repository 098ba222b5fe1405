// Package kubectl is the command line of Amber's Kubernetes half: `amber k8s
// backup|restore|ls|status`, which is also the kubectl plugin `kubectl amber`
// (the amber binary installed as kubectl-amber). It creates Backup and
// Restore objects, follows them, and shows Backups and BackupPolicies as the
// controller reports them; it never talks to a sidecar or a repository
// itself.
//
// It talks to the Kubernetes API through client-go's REST client with a
// scheme holding only amber.dev/v1alpha1, and imports of Amber's own code
// only controller/api/v1alpha1 and plugins/api/clock. It must never import
// controller/app, controller/controllers or anything under sidecar/: the
// amber binary links this package, and every run of amber (an
// archive_command runs once per log segment) would pay for their size and
// start-up.
package kubectl
