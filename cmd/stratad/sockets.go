package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errDataDirBusy: another daemon holds the data directory's lock.
var errDataDirBusy = errors.New("data directory in use")

// errSocketInUse: a live process answers on the socket path.
var errSocketInUse = errors.New("socket in use")

// dirLock is the exclusive flock on <data-dir>/stratad.lock. The kernel
// drops it when the process dies, so a crash never leaves the directory
// locked; the pid inside is only for the error message.
type dirLock struct {
	f *os.File
}

// lockDataDir creates the data directory if needed and takes its lock.
func lockDataDir(dir string) (*dirLock, error) {
	// 0711: other users may reach sockets inside it by name but cannot
	// list it; the store itself lives in a 0700 subdirectory.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, "stratad.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(pid))
			if holder == "" {
				holder = "unknown"
			}
			return nil, fmt.Errorf("%w: another stratad (pid %s) holds %s; stop it or choose another --data-dir",
				errDataDirBusy, holder, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// Unlock releases the lock.
func (l *dirLock) Unlock() {
	_ = l.f.Truncate(0)
	_ = l.f.Close()
}

// listenUnix listens on path with the given mode. A leftover socket file
// from a daemon that died is removed; one that a live process still
// answers on is left alone and reported, so two daemons never steal each
// other's sockets.
func listenUnix(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: a process answers on %s; is another stratad running?", errSocketInUse, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Closing the listener removes the file; a crash leaves it for the
	// stale check above.
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// sdNotify tells systemd (Type=notify) about state changes; a no-op when
// not started by systemd.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte(state))
}
