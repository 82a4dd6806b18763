package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"strata/cmd/internal/units"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "65536", want: 65536},
		{in: "64K", want: 64 << 10},
		{in: "64KiB", want: 64 << 10},
		{in: "64KB", want: 64 << 10},
		{in: "1.5G", want: 3 << 29},
		{in: "256MiB", want: 256 << 20},
		{in: "2T", want: 2 << 40},
		{in: "", bad: true},
		{in: "-1K", bad: true},
		{in: "ten", bad: true},
		{in: "1X", bad: true},
		{in: "9999999T", bad: true},
	} {
		got, err := units.ParseSize(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("units.ParseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("units.ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// newFlags returns a parsed flag set over a fresh config.
func newFlags(t *testing.T, args ...string) (*config, *pflag.FlagSet) {
	t.Helper()
	var c config
	fs := pflag.NewFlagSet("stratad", pflag.ContinueOnError)
	c.registerFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c, fs
}

func TestConfigFileAppliesFlagNamesAndCommandLineWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stratad.json")
	os.WriteFile(path, []byte(`{"data-dir": "/srv/strata", "cache-size": "1GiB", "gc-interval": "10m",
		"compression-level": 3, "nbd-tcp-insecure": true, "log-format": "json"}`), 0o644)
	c, fs := newFlags(t, "--log-format", "console", "--compression-level", "7")
	if err := loadConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/strata" || c.CacheBytes != 1<<30 || time.Duration(c.GCInterval) != 10*time.Minute || !c.NBDTCPInsecure {
		t.Fatalf("file values not applied: %+v", c)
	}
	if c.LogFormat != "console" || c.CompressionLevel != 7 {
		t.Fatalf("command-line flags must win over the file: log-format %q, compression-level %d", c.LogFormat, c.CompressionLevel)
	}
	// Tunables not given stay unset, so storage and layer defaults apply.
	if c.ChunkSize != unset || c.Workers != unset || c.GCGrace != unset || c.SealWorkers != unset {
		t.Fatalf("unset tunables changed: %+v", c)
	}
}

func TestConfigFileRefusesUnknownKeysAndBadValues(t *testing.T) {
	for name, body := range map[string]string{
		"unknown key":   `{"data-directory": "/x"}`,
		"config key":    `{"config": "/other.json"}`,
		"bad size":      `{"cache-size": "lots"}`,
		"bad duration":  `{"gc-grace": 5}`,
		"nested object": `{"data-dir": {"path": "/x"}}`,
		"not json":      `data-dir=/x`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.json")
			os.WriteFile(path, []byte(body), 0o644)
			_, fs := newFlags(t)
			if err := loadConfigFile(fs, path); err == nil {
				t.Fatalf("config %s accepted", body)
			}
		})
	}
}

func TestResolveDefaultsAndCombinations(t *testing.T) {
	c, _ := newFlags(t, "--data-dir", "/d")
	if err := c.resolve(); err != nil {
		t.Fatal(err)
	}
	if c.AdminSocket != "/d/admin.sock" || c.NBDSocket != "/d/nbd.sock" {
		t.Fatalf("sockets default to the data dir: %s %s", c.AdminSocket, c.NBDSocket)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nbd-tcp", "127.0.0.1:0"}, "--tls-cert"},
		{[]string{"--nbd-tcp", "127.0.0.1:0", "--tls-cert", "c.pem"}, "go together"},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, "only apply with --nbd-tcp"},
		{[]string{"--nbd-tcp", "127.0.0.1:0", "--nbd-tcp-insecure", "--tls-client-ca", "ca.pem"}, "--tls-client-ca needs"},
		{[]string{"--log-format", "xml"}, "console or json"},
		{[]string{"--data-dir", ""}, "must not be empty"},
		{[]string{"--default-quota", "compute.pools=3"}, "unknown quota"},
		{[]string{"--default-quota", "compute.disks.count=-1"}, "negative"},
		{[]string{"--admins", "4294967296"}, "not a uid"},
	} {
		c, _ := newFlags(t, tc.args...)
		err := c.resolve()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: resolve() = %v, want an error about %q", tc.args, err, tc.want)
		}
	}
	c, _ = newFlags(t, "--nbd-tcp", "127.0.0.1:0", "--nbd-tcp-insecure")
	if err := c.resolve(); err != nil {
		t.Errorf("insecure loopback TCP: %v", err)
	}
}

func TestSecondLockOnDataDirFailsClearly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	if !errors.Is(err, errDataDirBusy) || !strings.Contains(err.Error(), "another stratad (pid ") {
		t.Fatalf("second lock: %v", err)
	}
	l.Unlock()
	l2, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

func TestListenUnixRemovesStaleSocketsOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	// A stale socket: bound, then the process "died" without unlinking.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err := listenUnix(path, 0o666)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	// A live one is left alone.
	if _, err := listenUnix(path, 0o666); !errors.Is(err, errSocketInUse) {
		t.Fatalf("live socket: %v", err)
	}
	l.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("closing the listener must remove the socket file: %v", err)
	}
	// A regular file at the path is not ours to delete.
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := listenUnix(path, 0o666); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at socket path: %v", err)
	}
}

// The example in contrib/ is what operators copy: it must load.
func TestContribExampleConfigLoads(t *testing.T) {
	c, fs := newFlags(t)
	if err := loadConfigFile(fs, filepath.Join("..", "..", "contrib", "stratad.example.json")); err != nil {
		t.Fatal(err)
	}
	if err := c.resolve(); err != nil {
		t.Fatal(err)
	}
	if c.AdminSocket != "/run/strata/admin.sock" || c.CacheBytes != 1<<30 {
		t.Fatalf("example config not applied: %+v", c)
	}
}

func TestConfigFileListsAndMaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"admins": [1000, 1001], "default-quota": {"compute.diskPools.count": 4, "compute.images.count": 50}}`), 0o644)
	c, fs := newFlags(t)
	if err := loadConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if err := c.resolve(); err != nil {
		t.Fatal(err)
	}
	ac := c.apiConfig("/spool", nil)
	if len(ac.Admins) != 2 || ac.Admins[0] != 1000 || ac.Admins[1] != 1001 {
		t.Fatalf("admins %v", ac.Admins)
	}
	if ac.DefaultQuotas["compute.diskPools.count"] != 4 || ac.DefaultQuotas["compute.images.count"] != 50 || len(ac.DefaultQuotas) != 2 {
		t.Fatalf("default quotas %v", ac.DefaultQuotas)
	}
	os.WriteFile(path, []byte(`{"admins": [[1]]}`), 0o644)
	_, fs = newFlags(t)
	if err := loadConfigFile(fs, path); err == nil {
		t.Fatal("nested list accepted")
	}
}

func TestCleanSpoolRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "upload-123"), []byte("half an image"), 0o600)
	os.Mkdir(filepath.Join(dir, "export-9"), 0o700)
	n, err := cleanSpool(dir)
	if err != nil || n != 2 {
		t.Fatalf("cleanSpool = %d, %v", n, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestHugeReadLimitFlag: --huge-read-limit maps onto
// storage.Options.HugeReadLimit, with 0 meaning never and no flag the
// storage default.
func TestHugeReadLimitFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int64
	}{
		{nil, 0},
		{[]string{"--huge-read-limit", "0"}, -1},
		{[]string{"--huge-read-limit", "8GiB"}, 8 << 30},
	} {
		c, _ := newFlags(t, tc.args...)
		if got := c.storageOptions().HugeReadLimit; got != tc.want {
			t.Errorf("%v: HugeReadLimit %d, want %d", tc.args, got, tc.want)
		}
	}
}
