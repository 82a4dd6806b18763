// Command stratad is the strata daemon: it owns one data directory (one
// Badger store of deduplicated chunks, layers, disks and the catalog) and
// serves it on two Unix sockets.
//
//   - The admin socket speaks HTTP/JSON (the api package's Compute-style
//     routes) plus /metrics (Prometheus) and /healthz. Its mode is 0666 on
//     purpose: every local user may connect, and the api package decides
//     what each one may do from the socket's peer credentials.
//   - The NBD socket serves exports disk/<id> (read-write) and image/<id>
//     (read-only) to qemu, libnbd or the kernel client, with the same access
//     check. NBD over TCP is optional and then wants TLS; a client
//     certificate's common name is the caller's identity.
//
// main only wires values together: storage.Open, layer.Open, the api
// service, an http.Server and an nbd.Server. Lifecycle: the daemon takes an
// exclusive lock on the data directory before it touches anything (so a
// second daemon fails with a clear message instead of deleting the first
// one's sockets), removes stale socket files, and on SIGTERM or SIGINT stops
// accepting, drains and flushes NBD connections, lets API operations reach a
// resumable point, and closes the store. A second signal exits at once.
//
// Flags map one to one onto storage.Options and layer.Options; tunables not
// given keep those packages' measured defaults. --config FILE reads the same
// names from a JSON object.
package main
