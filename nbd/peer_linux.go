package nbd

import (
	"net"
	"syscall"
)

// unixCred reads SO_PEERCRED: the credentials the kernel recorded when the
// client connected, which the client cannot forge.
func unixCred(uc *net.UnixConn) *UnixCred {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return nil
	}
	return &UnixCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
}
