package api

import (
	"os"

	"go.uber.org/zap"

	"strata/api/apitypes"
)

// Config is what the daemon tells the API about its policy.
type Config struct {
	// Admins are uids with every right, besides root and the daemon's own
	// uid, which always have them.
	Admins []uint32
	// AllowWindowsImport lets images:upload make WINDOWS images. The
	// cloud's rule (and the default here) is that Windows images come from
	// disks or snapshots, which is always allowed.
	AllowWindowsImport bool
	// SpoolDir holds uploads while they are checked and imported, and
	// qcow2 exports while they are written. Empty: os.TempDir().
	SpoolDir string
	// DefaultQuotas override the built-in limits (DefaultQuotas()) of
	// folders that have not set their own.
	DefaultQuotas map[string]int64
	// Logger receives one line per failed operation; nil logs nothing.
	Logger *zap.Logger
}

// DefaultQuotas are the built-in per-folder limits. They are generous
// except compute.diskPools.count: a pooled image pins its layer and cache
// for as long as any disk uses it, so an admin opts in per folder.
func DefaultQuotas() map[string]int64 {
	return map[string]int64{
		apitypes.QuotaImagesCount:    1000,
		apitypes.QuotaImagesSize:     16 << 40,
		apitypes.QuotaDisksCount:     1000,
		apitypes.QuotaSnapshotsCount: 1000,
		apitypes.QuotaDiskPoolsCount: 0,
	}
}

// quotaNames lists the quotas in display order.
var quotaNames = []string{
	apitypes.QuotaImagesCount,
	apitypes.QuotaImagesSize,
	apitypes.QuotaDisksCount,
	apitypes.QuotaSnapshotsCount,
	apitypes.QuotaDiskPoolsCount,
}

func (c Config) spoolDir() string {
	if c.SpoolDir == "" {
		return os.TempDir()
	}
	return c.SpoolDir
}

func (c Config) logger() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}
