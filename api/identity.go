package api

import (
	"context"
	"net"
	"os/user"
	"strconv"
	"syscall"

	"strata/api/apitypes"
)

// Identity is who is calling: the peer credentials of the admin (or NBD)
// Unix socket connection.
type Identity struct {
	UID uint32
	GID uint32
	// Groups are the user's supplementary groups, looked up once per
	// connection; bindings to any of them apply.
	Groups []uint32
	// PID is the peer process (0 when unknown). One process may hold
	// several writable NBD connections to a disk (multi-conn); another
	// process may not.
	PID int32
	// Known is false for a connection without credentials; such callers
	// get UNAUTHENTICATED.
	Known bool
}

// Subject is the caller's user subject, "unixUser:<uid>".
func (id Identity) Subject() string {
	if !id.Known {
		return "anonymous"
	}
	return apitypes.SubjectUnixUser + ":" + strconv.FormatUint(uint64(id.UID), 10)
}

// matches reports whether a binding's subject covers the caller.
func (id Identity) matches(s apitypes.Subject) bool {
	if !id.Known {
		return false
	}
	switch s.Type {
	case apitypes.SubjectSystem:
		return s.ID == apitypes.SystemAllAuthenticatedUsers
	case apitypes.SubjectUnixUser:
		return s.ID == strconv.FormatUint(uint64(id.UID), 10)
	case apitypes.SubjectUnixGroup:
		if s.ID == strconv.FormatUint(uint64(id.GID), 10) {
			return true
		}
		for _, g := range id.Groups {
			if s.ID == strconv.FormatUint(uint64(g), 10) {
				return true
			}
		}
	}
	return false
}

type identityKey struct{}

// WithIdentity returns ctx carrying id. The daemon uses it for callers
// identified otherwise (a TLS client certificate); tests use it to act as
// any user.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity in ctx (Known is false when none).
func IdentityFrom(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey{}).(Identity)
	return id
}

// ConnContext is an http.Server.ConnContext: it reads the Unix socket peer
// credentials (SO_PEERCRED) of each new connection and stores them in the
// connection's context, where the handler finds them.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	id, err := PeerIdentity(c)
	if err != nil {
		return ctx
	}
	return WithIdentity(ctx, id)
}

// PeerIdentity returns the credentials of the process at the other end of
// a Unix socket connection. The NBD server calls it for its own Unix socket.
func PeerIdentity(c net.Conn) (Identity, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Identity{}, errf(apitypes.CodeUnauthenticated, "peer credentials need a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Identity{}, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Identity{}, err
	}
	if cerr != nil {
		return Identity{}, cerr
	}
	id := Identity{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Known: true}
	id.Groups = supplementaryGroups(cred.Uid)
	return id, nil
}

// supplementaryGroups looks the user's groups up in the system database;
// an unknown uid simply has none beyond its primary group.
func supplementaryGroups(uid uint32) []uint32 {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	out := make([]uint32, 0, len(gids))
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}
