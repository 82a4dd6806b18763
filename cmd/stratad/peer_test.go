package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"strata/nbd"
)

func TestPeerIdentity(t *testing.T) {
	id, err := peerIdentity(nbd.Peer{Unix: &nbd.UnixCred{UID: 1000, GID: 100, PID: 42}})
	if err != nil || !id.Known || id.UID != 1000 || id.GID != 100 || id.PID != 42 {
		t.Fatalf("unix peer: %+v %v", id, err)
	}
	cert := func(cn string) *x509.Certificate { return &x509.Certificate{Subject: pkix.Name{CommonName: cn}} }
	for cn, uid := range map[string]uint32{"unixUser:1001": 1001, "1002": 1002} {
		id, err := peerIdentity(nbd.Peer{TLS: true, Certificate: cert(cn)})
		if err != nil || !id.Known || id.UID != uid {
			t.Errorf("certificate %q: %+v %v", cn, id, err)
		}
		// Connections of one certificate holder share a stand-in PID, so
		// its multi-conn connections count as one writer.
		again, _ := peerIdentity(nbd.Peer{TLS: true, Certificate: cert(cn)})
		if id.PID >= 0 || again.PID != id.PID {
			t.Errorf("certificate %q: stand-in PIDs %d and %d, want equal and negative", cn, id.PID, again.PID)
		}
	}
	for _, p := range []nbd.Peer{{}, {TLS: true}, {TLS: true, Certificate: cert("alice")}} {
		if id, err := peerIdentity(p); err == nil || id.Known {
			t.Errorf("peer %+v identified as %+v", p, id)
		}
	}
}
