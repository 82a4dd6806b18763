// Package e2e holds the end-to-end tests of strata: they build the real
// stratad and strata binaries, start the daemon on a temporary data
// directory, and drive it only as a user would, through the CLI and real
// NBD clients (qemu-img, qemu-io, nbdcopy), with filesystem tools
// (mke2fs, e2fsck, debugfs) to prove the bytes a VM would see. Tests that
// act as other users (setpriv) must run as root, as `make test` does.
package e2e
