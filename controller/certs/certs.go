// Package certs is the controller's certificate authority. The CA's key
// and certificate live in one Secret in the controller's namespace; from
// it the controller issues the webhook's serving certificate (and patches
// the CA into the webhook configurations), its own client certificate for
// the sidecar API, and each injected pod's certificate (a Secret mounted
// into the pod). Only crypto/x509 from the standard library is used.
//
// Keys and certificates are never logged; errors name the Secret, not its
// contents.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Secret keys, as for kubernetes.io/tls Secrets plus the CA.
const (
	KeyCert = corev1.TLSCertKey       // tls.crt
	KeyKey  = corev1.TLSPrivateKeyKey // tls.key
	KeyCA   = "ca.crt"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// RenewBefore is how long before expiry a leaf certificate is reissued.
	RenewBefore = 30 * 24 * time.Hour
	backdate    = 5 * time.Minute
)

// Authority is a CA that can issue certificates.
type Authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// CertPEM returns the CA certificate (the caBundle, and ca.crt in issued Secrets).
func (a *Authority) CertPEM() []byte { return bytes.Clone(a.certPEM) }

// Pool returns a pool holding only this CA.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// NewAuthority makes a fresh self-signed CA valid from now.
func NewAuthority(now time.Time) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "amber-controller CA", Organization: []string{"amber.dev"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der)}, nil
}

// ParseAuthority reads a CA from PEM.
func ParseAuthority(certPEM, keyPEM []byte) (*Authority, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key pair: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, errors.New("the CA Secret does not hold an ECDSA CA; delete it and the controller makes a new one")
	}
	return &Authority{cert: cert, key: key, certPEM: bytes.Clone(certPEM)}, nil
}

// KeyPEM returns the CA key, for storing in its Secret only.
func (a *Authority) keyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(a.key)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// Leaf is what to issue.
type Leaf struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Server     bool // TLS server authentication
	Client     bool // TLS client authentication
	Validity   time.Duration
}

// Issue signs a new key pair for l; it returns PEM certificate and key.
func (a *Authority) Issue(l Leaf, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", l.CommonName, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	validity := l.Validity
	if validity <= 0 {
		validity = leafValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	var usage []x509.ExtKeyUsage
	if l.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"amber.dev"}},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", l.CommonName, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kder), nil
}

// EnsureAuthority loads the CA from the Secret namespace/name, creating it
// (and the Secret) when missing. Two controllers racing both succeed: the
// loser of the create reads the winner's CA.
func EnsureAuthority(ctx context.Context, c client.Client, namespace, name string, now time.Time) (*Authority, error) {
	var s corev1.Secret
	err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &s)
	if err == nil {
		a, err := ParseAuthority(s.Data[KeyCert], s.Data[KeyKey])
		if err != nil {
			return nil, fmt.Errorf("CA Secret %s/%s: %w", namespace, name, err)
		}
		return a, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read CA Secret %s/%s: %w", namespace, name, err)
	}
	a, err := NewAuthority(now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := a.keyPEM()
	if err != nil {
		return nil, err
	}
	s = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "amber-controller"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{KeyCert: a.certPEM, KeyKey: keyPEM},
	}
	if err := c.Create(ctx, &s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return EnsureAuthority(ctx, c, namespace, name, now)
		}
		return nil, fmt.Errorf("create CA Secret %s/%s: %w", namespace, name, err)
	}
	return a, nil
}

// WriteServingCert issues a server certificate for hosts (DNS names or IP
// addresses) and writes tls.crt and tls.key into dir, where the webhook
// server reads them (and notices when they change).
func (a *Authority) WriteServingCert(dir string, hosts []string, now time.Time) error {
	l := Leaf{CommonName: "amber-controller webhook", Server: true}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			l.IPs = append(l.IPs, ip)
		} else {
			l.DNSNames = append(l.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		l.CommonName = hosts[0]
	}
	certPEM, keyPEM, err := a.Issue(l, now)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cert dir: %w", err)
	}
	// Key first, then the certificate: a watcher that sees the new
	// certificate also finds its key.
	if err := writeFile(filepath.Join(dir, KeyKey), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, KeyCert), certPEM, 0o644)
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// PatchCABundle puts the CA into every webhook of the named
// MutatingWebhookConfiguration and ValidatingWebhookConfiguration (an
// empty name skips one). A configuration that does not exist is an error
// that says how to install it.
func (a *Authority) PatchCABundle(ctx context.Context, c client.Client, mutating, validating string) error {
	if mutating != "" {
		var m admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: mutating}, &m); err != nil {
			return fmt.Errorf("read MutatingWebhookConfiguration %s (installed by the Helm chart): %w", mutating, err)
		}
		orig := m.DeepCopy()
		for i := range m.Webhooks {
			m.Webhooks[i].ClientConfig.CABundle = a.CertPEM()
		}
		if err := c.Patch(ctx, &m, client.MergeFrom(orig)); err != nil {
			return fmt.Errorf("patch caBundle into MutatingWebhookConfiguration %s: %w", mutating, err)
		}
	}
	if validating != "" {
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: validating}, &v); err != nil {
			return fmt.Errorf("read ValidatingWebhookConfiguration %s (installed by the Helm chart): %w", validating, err)
		}
		orig := v.DeepCopy()
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig.CABundle = a.CertPEM()
		}
		if err := c.Patch(ctx, &v, client.MergeFrom(orig)); err != nil {
			return fmt.Errorf("patch caBundle into ValidatingWebhookConfiguration %s: %w", validating, err)
		}
	}
	return nil
}

// ControllerClientName is the common name of the controller's client
// certificate; sidecars accept API calls only from it.
const ControllerClientName = "amber-controller"

// ClientTLS returns the TLS configuration the controller dials sidecars
// with: its own client certificate, and only this CA trusted. The server
// name of each connection is the pod's identity (SidecarIdentity).
func (a *Authority) ClientTLS(now time.Time) (*tls.Config, error) {
	certPEM, keyPEM, err := a.Issue(Leaf{CommonName: ControllerClientName, Client: true}, now)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: a.Pool(), MinVersion: tls.VersionTLS13}, nil
}

// SidecarIdentity is the DNS name in a sidecar's certificate: the pod's
// name and namespace under a suffix that resolves nowhere, so it names the
// pod and nothing else. The controller dials the pod IP with this as the
// TLS server name.
func SidecarIdentity(namespace, pod string) string {
	return pod + "." + namespace + ".sidecar.amber.dev"
}

// SidecarSecretName is the Secret holding a pod's sidecar certificate.
func SidecarSecretName(pod string) string { return "amber-sidecar-" + pod }

// EnsureSidecarSecret creates (or renews, when it expires within
// RenewBefore) the Secret holding the sidecar certificate for pod: tls.crt
// and tls.key (server and client authentication, for the identity
// SidecarIdentity) and ca.crt. It returns the Secret's name.
func (a *Authority) EnsureSidecarSecret(ctx context.Context, c client.Client, namespace, pod string, now time.Time) (string, error) {
	name := SidecarSecretName(pod)
	identity := SidecarIdentity(namespace, pod)
	var s corev1.Secret
	err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &s)
	exists := err == nil
	switch {
	case exists:
		if a.valid(s.Data[KeyCert], identity, now) {
			return name, nil
		}
	case apierrors.IsNotFound(err):
	default:
		return "", fmt.Errorf("read sidecar Secret %s/%s: %w", namespace, name, err)
	}
	certPEM, keyPEM, err := a.Issue(Leaf{CommonName: identity, DNSNames: []string{identity}, Server: true, Client: true}, now)
	if err != nil {
		return "", err
	}
	data := map[string][]byte{KeyCert: certPEM, KeyKey: keyPEM, KeyCA: a.CertPEM()}
	if exists {
		s.Data = data
		if err := c.Update(ctx, &s); err != nil {
			return "", fmt.Errorf("renew sidecar Secret %s/%s: %w", namespace, name, err)
		}
		return name, nil
	}
	s = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "amber-controller", "amber.dev/pod": pod}},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
	if err := c.Create(ctx, &s); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create sidecar Secret %s/%s: %w", namespace, name, err)
	}
	return name, nil
}

// valid reports whether certPEM was issued by a for identity and is good
// for longer than RenewBefore.
func (a *Authority) valid(certPEM []byte, identity string, now time.Time) bool {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return false
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return false
	}
	_, err = cert.Verify(x509.VerifyOptions{DNSName: identity, Roots: a.Pool(), CurrentTime: now.Add(RenewBefore),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err == nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return n, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
