package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/api/apitypes"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "strata e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for cn, a server one (for
// 127.0.0.1) or a client one.
func (ca *testCA) issue(t *testing.T, cn string, server bool, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// clientDir writes a libnbd/qemu x509 credentials directory for cn.
func (ca *testCA) clientDir(t *testing.T, dir, cn string, serial int64) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key := ca.issue(t, cn, false, serial)
	for name, data := range map[string][]byte{"ca-cert.pem": ca.pem, "client-cert.pem": cert, "client-key.pem": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tcpAddr reads the bound NBD TCP address from the daemon's "serving" line.
func (d *daemon) tcpAddr(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(d.logText(), "\n") {
		if !strings.Contains(line, `"msg":"serving"`) {
			continue
		}
		var rec struct {
			NBDTCP string `json:"nbd_tcp"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.NBDTCP == "" {
			t.Fatalf("serving line without nbd_tcp: %s (%v)", line, err)
		}
		return rec.NBDTCP
	}
	t.Fatal("no serving line in the daemon log")
	return ""
}

// TestNBDOverTLSWithClientCertificates serves NBD on loopback TCP with
// TLS and client certificates: the certificate's common name is the
// caller's identity, checked like Unix credentials; plaintext and
// certificates of users without rights are refused.
func TestNBDOverTLSWithClientCertificates(t *testing.T) {
	need(t, "nbdcopy", "nbdinfo", "qemu-io")
	work := t.TempDir()
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "localhost", true, 2)
	files := map[string][]byte{"ca.pem": ca.pem, "server.pem": srvCert, "server-key.pem": srvKey}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(work, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, filepath.Join(work, "data"), "--nbd-tcp", "127.0.0.1:0",
		"--tls-cert", filepath.Join(work, "server.pem"), "--tls-key", filepath.Join(work, "server-key.pem"),
		"--tls-client-ca", filepath.Join(work, "ca.pem"))
	addr := d.tcpAddr(t)

	d.ok(t, -1, nil, "folder", "create", "tls")
	var disk apitypes.Disk
	d.ok(t, -1, &disk, "disk", "create", "--folder", "tls", "--size", "4M")
	d.nbdTool(t, -1, disk.ExportName, "qemu-io", "-f", "raw", d.uri(disk.ExportName), "-c", "write -P 0x77 0 64k")

	admin := ca.clientDir(t, filepath.Join(work, "admin"), "unixUser:0", 3)
	nobodyDir := ca.clientDir(t, filepath.Join(work, "nobody"), "unixUser:65534", 4)
	tlsURI := func(dir string) string {
		return "nbds://" + addr + "/" + disk.ExportName + "?tls-certificates=" + dir
	}

	out := filepath.Join(work, "out.raw")
	if r := run(t, -1, "nbdcopy", tlsURI(admin), out); r.code != 0 {
		t.Fatalf("nbdcopy over TLS as the admin certificate: %s\n%s", r.stderr, d.logText())
	}
	d.idle(t, disk.ExportName)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0x77}, 64<<10), make([]byte, 4<<20-64<<10)...)
	if !bytes.Equal(got, want) {
		t.Fatal("the disk read over TLS differs from what was written over the Unix socket")
	}
	if r := run(t, -1, "nbdinfo", tlsURI(nobodyDir)); r.code == 0 {
		t.Fatalf("a certificate for a user without rights opened %s:\n%s", disk.ExportName, r.stdout)
	}
	d.refused(t, disk.ExportName, "unixUser:65534", apitypes.CodePermissionDenied)
	if r := run(t, -1, "nbdinfo", "nbd://"+addr+"/"+disk.ExportName); r.code == 0 {
		t.Fatalf("plaintext NBD over TCP opened %s", disk.ExportName)
	}
}
