package nbd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a throwaway CA with one server and one client certificate,
// written in the layout libnbd and qemu read (tls-certificates dir).
type testPKI struct {
	dir        string
	caPool     *x509.CertPool
	serverCert tls.Certificate
	clientCert tls.Certificate
}

func newTestPKI(t *testing.T, clientCN string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strata test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM("ca-cert.pem", "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (tls.Certificate, []byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
		return c, der, kder
	}
	p := &testPKI{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	var cder, kder []byte
	p.serverCert, cder, kder = issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	writePEM("server-cert.pem", "CERTIFICATE", cder)
	writePEM("server-key.pem", "PRIVATE KEY", kder)
	p.clientCert, cder, kder = issue(3, clientCN, x509.ExtKeyUsageClientAuth, nil)
	writePEM("client-cert.pem", "CERTIFICATE", cder)
	writePEM("client-key.pem", "PRIVATE KEY", kder)
	return p
}

// startTLSServer serves on 127.0.0.1 with TLS required and client
// certificates verified against the test CA.
func startTLSServer(t *testing.T, pki *testPKI, backends map[string]Backend) (*Server, *mapExports, string) {
	t.Helper()
	ex := &mapExports{m: backends, deny: map[string]bool{}}
	srv := &Server{Exports: ex, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{pki.serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.caPool,
		MinVersion:   tls.VersionTLS12,
	}, ErrorLog: t.Logf}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ex, l.Addr().String()
}

func TestTLSWithNbdinfoAndQemuClientCertificateReachesLookup(t *testing.T) {
	pki := newTestPKI(t, "alice")
	m := mixedDisk(8 << 20)
	_, ex, addr := startTLSServer(t, pki, map[string]Backend{"disk/t": m})

	out := runPeer(t, "nbdinfo", "--json", "nbds://"+addr+"/disk/t?tls-certificates="+pki.dir)
	var got struct {
		TLS     bool `json:"TLS"`
		Exports []struct {
			Size int64 `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !got.TLS || len(got.Exports) != 1 || got.Exports[0].Size != 8<<20 {
		t.Fatalf("nbdinfo over TLS: %s", out)
	}
	p := ex.lastPeer()
	if !p.TLS || p.Certificate == nil || p.Certificate.Subject.CommonName != "alice" || p.Unix != nil {
		t.Fatalf("peer seen by Lookup: %+v", p)
	}

	// qemu's own TLS client reads the same directory layout.
	host, port, _ := net.SplitHostPort(addr)
	dst := filepath.Join(t.TempDir(), "out.raw")
	runPeer(t, "qemu-img", "convert", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+pki.dir,
		"--image-opts", "driver=nbd,host="+host+",port="+port+",export=disk/t,tls-creds=tls0", "-O", "raw", dst)
	data, err := os.ReadFile(dst)
	if err != nil || string(data) != string(m.snapshot()) {
		t.Fatalf("qemu-img convert over TLS: content differs (%v)", err)
	}
}

func TestTLSRequiredOnTCP(t *testing.T) {
	pki := newTestPKI(t, "bob")
	_, ex, addr := startTLSServer(t, pki, map[string]Backend{"d": newMem(1 << 20)})

	t.Run("options before STARTTLS are refused", func(t *testing.T) {
		rc := dialRaw(t, "tcp", addr)
		rc.greet(3)
		for _, opt := range []uint32{optList, optStructuredReply, optGo, optInfo, 99} {
			rc.opt(opt, nil)
			if m := rc.mustOptReply(); m.typ != repErrTLSReqd {
				t.Fatalf("option %d: reply %#x, want TLS_REQD", opt, m.typ)
			}
		}
		rc.opt(optExportName, []byte("d"))
		rc.expectClosed()
	})
	t.Run("STARTTLS then GO, client identity in Lookup", func(t *testing.T) {
		rc := dialRaw(t, "tcp", addr)
		rc.greet(3)
		rc.opt(optStartTLS, nil)
		if m := rc.mustOptReply(); m.typ != repAck {
			t.Fatalf("STARTTLS: %#x", m.typ)
		}
		tc := tls.Client(rc.c, &tls.Config{
			RootCAs: pki.caPool, ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{pki.clientCert},
		})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		rc.setConn(tc)
		rc.opt(optStartTLS, nil)
		if m := rc.mustOptReply(); m.typ != repErrInvalid {
			t.Fatalf("second STARTTLS: %#x", m.typ)
		}
		rc.goExport("d", true, false)
		if rp := rc.do(0, cmdWrite, 0, 5, []byte("hello")); rp.errno != 0 {
			t.Fatal(rp.errno)
		}
		rp := rc.do(0, cmdRead, 0, 5, nil)
		if string(rp.data) != "hello" {
			t.Fatalf("read %q", rp.data)
		}
		if p := ex.lastPeer(); p.Certificate == nil || p.Certificate.Subject.CommonName != "bob" {
			t.Fatalf("peer %+v", p)
		}
	})
	t.Run("client without certificate fails the handshake", func(t *testing.T) {
		rc := dialRaw(t, "tcp", addr)
		rc.greet(3)
		rc.opt(optStartTLS, nil)
		if m := rc.mustOptReply(); m.typ != repAck {
			t.Fatalf("STARTTLS: %#x", m.typ)
		}
		tc := tls.Client(rc.c, &tls.Config{RootCAs: pki.caPool, ServerName: "127.0.0.1"})
		err := tc.Handshake()
		if err == nil {
			// TLS 1.3 reports the server's rejection on first read.
			_, err = tc.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatal("handshake without a client certificate succeeded")
		}
	})
}

func TestServeRefusesPlainTCPUnlessInsecureAllowed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ex := &mapExports{m: map[string]Backend{"d": newMem(4096)}}
	if err := (&Server{Exports: ex}).Serve(l); !errors.Is(err, ErrInsecureTCP) {
		t.Fatalf("Serve without TLS: %v", err)
	}
	if err := (&Server{Exports: ex}).ListenAndServe("tcp", "127.0.0.1:0"); !errors.Is(err, ErrInsecureTCP) {
		t.Fatalf("ListenAndServe without TLS: %v", err)
	}
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Exports: ex, AllowInsecureTCP: true}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	out := runPeer(t, "nbdinfo", "--size", "nbd://"+l.Addr().String()+"/d")
	if strings.TrimSpace(out) != "4096" {
		t.Fatalf("nbdinfo: %q", out)
	}
	if p := ex.lastPeer(); p.TLS || p.Unix != nil {
		t.Fatalf("peer %+v", p)
	}
	srv.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatal(err)
	}
}

func TestUnixPeerCredentialsReachLookup(t *testing.T) {
	ts := startServer(t, map[string]Backend{"d": newMem(4096)}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.goExport("d", false, false)
	p := ts.exports.lastPeer()
	if p.Unix == nil || p.Unix.UID != uint32(os.Getuid()) || p.Unix.GID != uint32(os.Getgid()) || p.Unix.PID != int32(os.Getpid()) {
		t.Fatalf("unix peer %+v", p.Unix)
	}
}
