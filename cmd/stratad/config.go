package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"strata/api"
	"strata/cmd/internal/units"
)

// config is everything the daemon can be told. Every field is one flag; a
// config file sets the same names (see loadConfigFile), and a flag given on
// the command line wins over the file.
type config struct {
	DataDir     string
	AdminSocket string
	NBDSocket   string

	NBDTCP         string
	NBDTCPInsecure bool
	TLSCert        string
	TLSKey         string
	TLSClientCA    string

	LogFormat string
	LogLevel  string

	// storage.Options, one to one.
	ChunkSize        sizeValue
	CompressionLevel optInt
	GCGrace          optDuration
	GCInterval       optDuration
	Workers          optInt
	HugeReadLimit    sizeValue // 0 here means never (storage's -1)

	// layer.Options, one to one.
	CacheBytes  sizeValue
	SealWorkers optInt

	// api.Config, one to one.
	AllowWindowsImport bool
	Admins             []uint
	DefaultQuotas      map[string]int64

	ShutdownTimeout time.Duration
}

// unset marks tunables left to the storage and layer packages' measured
// defaults: the daemon does not repeat those numbers, so they cannot drift
// from the comments that justify them.
const unset = -1

// registerFlags binds every config field to a flag with its help text.
func (c *config) registerFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", "./var",
		"directory holding the store (one Badger database); created if missing; one daemon per directory")
	fs.StringVar(&c.AdminSocket, "admin-socket", "",
		"Unix socket of the admin HTTP/JSON API, /metrics and /healthz (default <data-dir>/admin.sock); mode 0666, callers are told apart by peer credentials")
	fs.StringVar(&c.NBDSocket, "nbd-socket", "",
		"Unix socket serving NBD exports disk/<id>, image/<id> and snapshot/<id> (default <data-dir>/nbd.sock); access checked by peer credentials")

	fs.StringVar(&c.NBDTCP, "nbd-tcp", "",
		"also serve NBD on this TCP address (e.g. 127.0.0.1:10809); needs --tls-cert and --tls-key, or --nbd-tcp-insecure")
	fs.BoolVar(&c.NBDTCPInsecure, "nbd-tcp-insecure", false,
		"allow --nbd-tcp without TLS (protocol tests on loopback): such clients carry no identity, so every export refuses them")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate the NBD TCP listener presents (STARTTLS)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "",
		"PEM CA bundle; when set, NBD TCP clients must present a certificate it signed, whose common name unixUser:<uid> (or <uid>) is their identity")

	fs.StringVar(&c.LogFormat, "log-format", "console", "log encoding: console (for people) or json (for collectors)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "least severe level logged: debug, info, warn or error")

	c.ChunkSize, c.CompressionLevel, c.GCGrace, c.GCInterval, c.Workers, c.HugeReadLimit = unset, unset, unset, unset, unset, unset
	c.CacheBytes, c.SealWorkers = unset, unset
	fs.Var(&c.ChunkSize, "chunk-size",
		"chunk size of a NEW store (4KiB..64KiB, power of two); an existing store keeps its own (default: storage's measured default)")
	fs.Var(&c.CompressionLevel, "compression-level", "zstd compression of new chunks: 1 fastest (the default) to 5 smallest")
	fs.Var(&c.GCGrace, "gc-grace", "how long a chunk with no references waits before it is freed, e.g. 10m (default: storage's)")
	fs.Var(&c.GCInterval, "gc-interval", "period of the background garbage collection; 0 turns it off (default: storage's)")
	fs.Var(&c.Workers, "workers", "import pipeline workers; 0 means one per CPU (default: storage's)")
	fs.Var(&c.HugeReadLimit, "huge-read-limit",
		"map the store's value log for reads in 2 MiB pages while it holds at most this much, e.g. 8GiB; 0 never (default: a quarter of memory; faster reads, but a miss reads 4 MiB)")
	fs.Var(&c.CacheBytes, "cache-size", "decoded chunk cache shared by all disks and images, e.g. 256MiB (default: layer's)")
	fs.Var(&c.SealWorkers, "seal-workers", "background snapshot seal parallelism; 0 means one per CPU (default: layer's)")

	fs.BoolVar(&c.AllowWindowsImport, "allow-windows-import", false,
		"accept uploads of WINDOWS images (by default Windows images must be made from a disk or snapshot)")
	fs.UintSliceVar(&c.Admins, "admins", nil,
		"uids with every right on every folder, besides root and the daemon's own user (comma-separated)")
	fs.StringToInt64Var(&c.DefaultQuotas, "default-quota", nil,
		"per-folder limits for folders that set none, e.g. compute.diskPools.count=4,compute.images.size=1099511627776 (bytes)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second,
		"on SIGTERM, how long to wait for NBD clients and API calls to finish before closing them")
}

// resolve fills derived defaults and checks combinations.
func (c *config) resolve() error {
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if c.AdminSocket == "" {
		c.AdminSocket = filepath.Join(c.DataDir, "admin.sock")
	}
	if c.NBDSocket == "" {
		c.NBDSocket = filepath.Join(c.DataDir, "nbd.sock")
	}
	switch c.LogFormat {
	case "console", "json":
	default:
		return fmt.Errorf("--log-format %q: want console or json", c.LogFormat)
	}
	if c.NBDTCP != "" {
		hasTLS := c.TLSCert != "" || c.TLSKey != ""
		if hasTLS && (c.TLSCert == "" || c.TLSKey == "") {
			return errors.New("--tls-cert and --tls-key go together")
		}
		if !hasTLS && !c.NBDTCPInsecure {
			return errors.New("--nbd-tcp needs --tls-cert and --tls-key (or --nbd-tcp-insecure for a loopback test)")
		}
	} else if c.TLSCert != "" || c.TLSKey != "" || c.TLSClientCA != "" || c.NBDTCPInsecure {
		return errors.New("--tls-* and --nbd-tcp-insecure only apply with --nbd-tcp")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	for _, uid := range c.Admins {
		if uid > math.MaxUint32 {
			return fmt.Errorf("--admins: %d is not a uid", uid)
		}
	}
	known := api.DefaultQuotas()
	for name, v := range c.DefaultQuotas {
		if _, ok := known[name]; !ok {
			names := slices.Sorted(maps.Keys(known))
			return fmt.Errorf("--default-quota: unknown quota %q (known: %s)", name, strings.Join(names, ", "))
		}
		if v < 0 {
			return fmt.Errorf("--default-quota: %s=%d is negative", name, v)
		}
	}
	return nil
}

// loadConfigFile applies a JSON object whose keys are long flag names
// ({"data-dir": "/var/lib/strata", "cache-size": "1GiB", "gc-interval":
// "10m"}). JSON because the standard library reads it: YAML would need a
// new module for a file of a dozen keys. A flag given on the command line
// wins; an unknown key is an error, so a typo is not silently ignored.
func loadConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var kv map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&kv); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for key, raw := range kv {
		f := fs.Lookup(key)
		if f == nil || key == "config" || key == "help" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the daemon's long flag names)", path, key)
		}
		if f.Changed {
			continue
		}
		val, err := jsonScalar(raw, f.Value.Type())
		if err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
		if err := fs.Set(key, val); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// jsonScalar turns a JSON value into the text a flag of type typ parses:
// strings, numbers and booleans for every flag, lists for list flags and
// objects for map flags.
func jsonScalar(raw json.RawMessage, typ string) (string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case []any:
		if !strings.HasSuffix(typ, "Slice") {
			return "", errors.New("a list is only for list flags")
		}
		// A list flag (--admins): the flag's own comma syntax.
		parts := make([]string, len(v))
		for i, e := range v {
			p, err := scalarText(e)
			if err != nil {
				return "", err
			}
			parts[i] = p
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		if !strings.HasPrefix(typ, "stringTo") {
			return "", errors.New("an object is only for key=value flags")
		}
		// A map flag (--default-quota): key=value pairs, in key order.
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			p, err := scalarText(v[k])
			if err != nil {
				return "", err
			}
			parts[i] = k + "=" + p
		}
		return strings.Join(parts, ","), nil
	default:
		return "", errors.New("want a string, number, boolean, list or object")
	}
}

// scalarText is the flag text of one JSON scalar inside a list or object.
func scalarText(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", errors.New("lists and objects may hold only strings, numbers and booleans")
}

// sizeValue is a byte count flag that takes 65536, 64K, 64KiB, 1.5G, ...
// (K, M, G, T are powers of 1024, as for disk sizes everywhere in strata).
type sizeValue int64

// String is empty while unset, so --help shows no misleading default.
func (s *sizeValue) String() string {
	if *s < 0 {
		return ""
	}
	return formatSize(int64(*s))
}

func (s *sizeValue) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

func (s *sizeValue) Type() string { return "size" }

// formatSize prints n with the largest binary suffix that divides it.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// optInt is an int flag that remembers whether it was set (unset = -1).
type optInt int

func (o *optInt) String() string {
	if *o < 0 {
		return ""
	}
	return strconv.Itoa(int(*o))
}

func (o *optInt) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a whole number >= 0", v)
	}
	*o = optInt(n)
	return nil
}

func (o *optInt) Type() string { return "int" }

// optDuration is a duration flag that remembers whether it was set.
type optDuration time.Duration

func (o *optDuration) String() string {
	if *o < 0 {
		return ""
	}
	return time.Duration(*o).String()
}

func (o *optDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want a duration like 30s or 10m", v)
	}
	*o = optDuration(d)
	return nil
}

func (o *optDuration) Type() string { return "duration" }
